"""Deterministic workload generator for the benchmark: an Amplitude-like cohort CSV.

usage: gen.py ROWS OUT.csv

Every field is quoted (as Amplitude writes them). Header `"amplitude_id","user_id"` plus
five property columns; about 90 bytes per row (2,000,000 rows ≈ 180 MB); some values
hold commas, doubled quotes and non-ASCII text; ~6% of the user ids are empty. The same
ROWS always give the same bytes (fixed seed, no dependence on the Python version's
hashing).
"""
import sys

COUNTRIES = [
    "United States", "Germany", "France", "Côte d'Ivoire", "Japan", "Brazil",
    "India", "United Kingdom", "España", "Türkiye", "Canada", "Australia",
]
CITIES = [
    "New York", "Berlin", "Paris", "Abidjan", "東京", "São Paulo", "Mumbai",
    "London", "Málaga", "İstanbul", "Toronto", "Sydney", "Zürich", "Kraków",
]
PLANS = ["free", "pro", "team", "enterprise, annual", "enterprise, monthly", "trial"]
DEVICES = [
    'iPhone 15 ""Pro""', "Pixel 8", 'Galaxy S24 ""Ultra""', "iPad Air", "MacBook",
    "Windows PC", "ThinkPad, X1", "Chromebook",
]


class Lcg:
    """64-bit linear congruential generator (Knuth MMIX constants)."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return self.state >> 11


def main(rows, out):
    rng = Lcg(20240601)
    header = '"amplitude_id","user_id","country","city","plan","device","ltv"\n'
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(header)
        buf = []
        base = 100_000_000_000
        for i in range(rows):
            r = rng.next()
            amp = base + i * 37 + (r & 31)
            user = "" if r % 100 < 6 else f"u{(r >> 7) & 0xFFFFFFFFFF:010x}@mail.io"
            country = COUNTRIES[(r >> 20) % len(COUNTRIES)]
            city = CITIES[(r >> 24) % len(CITIES)]
            plan = PLANS[(r >> 28) % len(PLANS)]
            device = DEVICES[(r >> 32) % len(DEVICES)]
            ltv = f"{(r >> 36) % 100000 / 100:.2f}"
            buf.append(f'"{amp}","{user}","{country}","{city}","{plan}","{device}","{ltv}"\n')
            if len(buf) == 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
