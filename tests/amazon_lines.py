"""Amazon Reviews lines for the converter's tests: a small 2018 release, and file helpers."""

import gzip
import json


def review_2018(user, item, seconds, rating=5.0):
    return json.dumps(
        {
            "reviewerID": user,
            "asin": item,
            "overall": rating,
            "unixReviewTime": seconds,
            "reviewText": "fine\tfilm\n",
        }
    )


# With k = 2 a one-pass filter keeps u3, u5, i4, i5; the iterative k-core removes them in turn:
# u4 (1 review) goes, then i5, then u5, then i4, then u3.
REVIEWS_2018 = [
    review_2018("u1", "i1", 1),
    review_2018("u1", "i2", 2),
    review_2018("u1", "i3", 3),
    review_2018("u1", "i2", 9),  # repeated (u1, i2): the later one goes
    review_2018("u2", "i2", 5),
    review_2018("u2", "i1", 5),  # tied: file order (i2 first) stays
    review_2018("u2", "i3", 6),
    "{this line is not json",
    review_2018("u3", "i1", 2),
    review_2018("u3", "i4", 3),
    review_2018("u4", "i5", 1),
    review_2018("u5", "i4", 1),
    review_2018("u5", "i5", 2),
]
META_2018 = [
    json.dumps(
        {
            "asin": "i1",
            "title": "Toy Story",
            "price": "$12.99",
            "brand": "Pixar",
            "description": ["<b>Great</b> &amp; fun\tfor\nkids"],
            "category": ["Movies & TV", "Kids"],
        }
    ),
    json.dumps({"asin": "i2", "description": ["No title here"], "category": ["Drama"]}),
    json.dumps({"asin": "i3", "title": "Heat", "description": [], "price": "$5 - $9"}),
    "garbage",
    json.dumps({"asin": "i4", "title": "Casino"}),
]


def write(path, lines, gz):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def read_table(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
