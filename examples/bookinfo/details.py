"""Bookinfo details: GET /details/<id> → book details (Istio's details-v1 data)."""
from bookinfo_common import product_id, serve


def details(h, rest):
    pid = product_id(rest)
    if pid is None:
        return 400, {"error": "please provide numeric product id"}
    return 200, {
        "id": pid,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


if __name__ == "__main__":
    serve("details", [("/details", details)])
