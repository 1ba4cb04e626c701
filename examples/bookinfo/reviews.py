"""Bookinfo reviews: GET /reviews/<id>.

SERVICE_VERSION v1: no ratings; v2: calls ratings, black stars; v3: calls ratings, red stars
(as Istio's reviews). The ratings call times out after 10 s (v2) or 2.5 s (v3), like Istio's.
"""
from bookinfo_common import PODNAME, VERSION, call, product_id, propagated, serve

RATINGS_URL = "http://ratings:9080/ratings/{}"
TEXTS = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
                  "plays by Shakespeare."),
]


def reviews(h, rest):
    pid = product_id(rest)
    if pid is None:
        return 400, {"error": "please provide numeric product id"}
    body = {"id": str(pid), "podname": PODNAME, "clustername": "null"}
    items = [{"reviewer": r, "text": t} for r, t in TEXTS]
    if VERSION in ("v2", "v3"):
        color = "black" if VERSION == "v2" else "red"
        timeout = 10.0 if VERSION == "v2" else 2.5
        status, rbody, served = call(RATINGS_URL.format(pid), propagated(h.headers), timeout)
        body["ratings"] = {"status": status, "servedBy": served, "version": rbody.get("version")}
        stars = rbody.get("ratings") if status == 200 else None
        for item in items:
            if isinstance(stars, dict) and item["reviewer"] in stars:
                item["rating"] = {"stars": stars[item["reviewer"]], "color": color}
            else:
                item["rating"] = {"error": "Ratings service is currently unavailable"}
    body["reviews"] = items
    return 200, body


if __name__ == "__main__":
    serve("reviews", [("/reviews", reviews)])
