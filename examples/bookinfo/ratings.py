"""Bookinfo ratings: GET /ratings/<id> → {"ratings": {"Reviewer1": 5, "Reviewer2": 4}}."""
import json

from bookinfo_common import product_id, serve

RATINGS: dict[int, dict[str, int]] = {}


def ratings(h, rest):
    pid = product_id(rest)
    if pid is None:
        return 400, {"error": "please provide numeric product ID"}
    if h.command == "POST":  # as Istio's ratings: store ratings posted for a product
        try:
            posted = json.loads(h.body.decode() or "{}")
            RATINGS[pid] = {str(k): int(v) for k, v in posted.items()}
        except (ValueError, AttributeError):
            return 400, {"error": "please provide valid ratings JSON"}
    return 200, {"id": pid, "ratings": RATINGS.get(pid, {"Reviewer1": 5, "Reviewer2": 4})}


if __name__ == "__main__":
    serve("ratings", [("/ratings", ratings)])
