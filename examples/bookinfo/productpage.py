"""Bookinfo productpage: calls details and reviews, says which versions answered.

GET /productpage            product 0 with details + reviews (JSON, not HTML)
GET /api/v1/products        the product list
GET /api/v1/products/<id>   details + reviews of one product
GET /api/v1/products/<id>/reviews | /ratings   as Istio's productpage API

The user is the incoming `end-user` header (or `?user=NAME`); it is forwarded, as are the tracing
headers, the way Istio's productpage does. As in Istio, the reviews call is tried twice with a 3 s
timeout each, the details call once with 3 s.
"""
from urllib.parse import parse_qs

from bookinfo_common import VERSION, call, product_id, propagated, serve

DETAILS_URL = "http://details:9080/details/{}"
REVIEWS_URL = "http://reviews:9080/reviews/{}"
PRODUCTS = [{
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: "
                       "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays.",
}]


def _headers(h) -> dict[str, str]:
    out = propagated(h.headers)
    query = parse_qs(h.path.split("?", 1)[1]) if "?" in h.path else {}
    if "user" in query and query["user"][0]:
        out["end-user"] = query["user"][0]
    return out


def _version(body: dict, served: str) -> str | None:
    if served and "-" in served:
        return served.rsplit("-", 1)[1]
    return body.get("version")


def _details(pid: int, headers: dict[str, str]) -> tuple[int, dict, str]:
    status, body, served = call(DETAILS_URL.format(pid), headers, 3.0)
    if status != 200:
        body = {"error": "Sorry, product details are currently unavailable for this book.",
                "cause": body.get("error") or body.get("body")}
    return status, body, served


def _reviews(pid: int, headers: dict[str, str]) -> tuple[int, dict, str]:
    status, body, served = 0, {}, ""
    for _ in range(2):
        status, body, served = call(REVIEWS_URL.format(pid), headers, 3.0)
        if status == 200:
            return status, body, served
    return status or 500, {"error": "Sorry, product reviews are currently unavailable for this book.",
                           "cause": body.get("error") or body.get("body")}, served


def _product(pid: int, headers: dict[str, str]) -> dict:
    product = next((p for p in PRODUCTS if p["id"] == pid), {"id": pid, "title": f"Product {pid}"})
    d_status, details, d_served = _details(pid, headers)
    r_status, reviews, r_served = _reviews(pid, headers)
    versions = {"productpage": VERSION}
    if d_status == 200:
        versions["details"] = _version(details, d_served)
    if r_status == 200:
        versions["reviews"] = _version(reviews, r_served)
        ratings = reviews.get("ratings")
        if isinstance(ratings, dict) and ratings.get("status") == 200:
            versions["ratings"] = _version(ratings, ratings.get("servedBy") or "")
    return {
        "product": product,
        "user": headers.get("end-user", ""),
        "details": details, "detailsStatus": d_status, "detailsServedBy": d_served,
        "reviews": reviews, "reviewsStatus": r_status, "reviewsServedBy": r_served,
        "versions": versions,
    }


def productpage(h, rest):
    return 200, _product(0, _headers(h))


def products(h, rest):
    if not rest:
        return 200, {"products": PRODUCTS}
    pid = product_id(rest)
    if pid is None:
        return 400, {"error": "please provide numeric product id"}
    headers = _headers(h)
    if len(rest) == 1:
        return 200, _product(pid, headers)
    if rest[1] == "reviews":
        status, body, served = _reviews(pid, headers)
        return status, {"reviews": body, "servedBy": served}
    if rest[1] == "ratings":
        status, body, served = call(f"http://ratings:9080/ratings/{pid}", headers, 3.0)
        return status or 503, {"ratings": body, "servedBy": served}
    return 404, {"error": "unknown product resource"}


if __name__ == "__main__":
    serve("productpage", [("/productpage", productpage), ("/api/v1/products", products)])
