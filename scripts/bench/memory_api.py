"""The memory service's write path, search and retrieval through its REST
API, against a running server (scripts/bench/memory.sh starts one).

    memory_api.py URL WRITE_TOKEN RECALL_TOKEN

Prints one JSON object:
- write: 500 single adds one after another (no LLM anywhere on the path):
  p50/p95/p99 latency; 10 batches of 1,000: memories per second;
- search: 300 hybrid searches over those 10,500 memories: p50/p95;
- recall: a synthetic long conversation (below), stored turn by turn in the
  `session` layer; for each question, whether a turn holding its evidence
  is among the top 10 results (evidence recall@10), and the tokens those
  10 results hold against the whole conversation's (about 4 characters a
  token).

The conversation: 60 sessions of 30 turns between a user and an
assistant about a software project. 120 facts (a teammate's role, a
service's port, a decision and its reason, a deadline...) are each stated
once in a random turn; every other turn is filler drawn from the same
vocabulary. Each fact has a question that paraphrases it (other words,
some shared names), as LoCoMo's single-hop questions do. Seeded: the same
set every run.
"""

import http.client
import json
import random
import sys
import time
import urllib.parse


class Api:
    def __init__(self, url, token):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method, path, body=None):
        self.conn.request(method, "/api/v1/memory" + path, body=json.dumps(body) if body is not None else None, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data)


def pct(values, p):
    v = sorted(values)
    return v[int(round((len(v) - 1) * p))]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1000


WORDS = ("deploy build cache queue worker schema index migration release branch review token session cluster node "
         "latency budget rollout canary feature flag config secret vault metric alert dashboard backup replica shard "
         "region bucket lambda cron job pipeline artifact image registry container sandbox network proxy gateway").split()


def filler(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."


NAMES = ["Amara", "Bjorn", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ilya", "Jonas", "Keiko", "Lior"]
SERVICES = ["billing", "search", "auth", "ledger", "notifier", "catalog", "checkout", "export", "ingest", "reports"]


def facts(rng):
    out = []
    for i in range(120):
        name, svc, other = rng.choice(NAMES), rng.choice(SERVICES), rng.choice(SERVICES)
        port, n, day = rng.randint(2000, 9999), rng.randint(2, 64), rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"])
        kind = i % 6
        if kind == 0:
            out.append((f"{name} owns the {svc} service and is the one to ask about its on-call rota.", f"Who is responsible for {svc}?"))
        elif kind == 1:
            out.append((f"The {svc} service listens on port {port} in staging.", f"Which port does staging {svc} use?"))
        elif kind == 2:
            out.append((f"We chose PostgreSQL over MongoDB for {svc} because we need transactions across tables.", f"Why did {svc} end up on PostgreSQL?"))
        elif kind == 3:
            out.append((f"The {svc} release is frozen every {day} afternoon for the audit.", f"On which day is the {svc} release frozen?"))
        elif kind == 4:
            out.append((f"{svc} calls {other} through the internal gateway with a {n} second timeout.", f"What timeout does {svc} use towards {other}?"))
        else:
            out.append((f"{name} prefers squash merges and rejects pull requests without tests in {svc}.", f"What does {name} expect from pull requests to {svc}?"))
    return out


def recall_bench(api):
    rng = random.Random(20261206)
    fs = facts(rng)
    turns = []  # (session, turn, text, fact index or None)
    slots = rng.sample(range(60 * 30), len(fs))
    placed = {slot: i for i, slot in enumerate(slots)}
    for s in range(60):
        for t in range(30):
            slot = s * 30 + t
            speaker = "user" if t % 2 == 0 else "assistant"
            text = fs[placed[slot]][0] if slot in placed else filler(rng)
            turns.append((f"s{s}", t, f"{speaker}: {text}", placed.get(slot)))
    evidence = {}
    for start in range(0, len(turns), 1000):
        batch = turns[start : start + 1000]
        res = api.call("POST", "/memories/batch", {"memories": [
            {"layer": "session", "session_id": s, "content": text, "metadata": {"turn": t}, "dedup": "off"} for (s, t, text, _) in batch
        ]})
        for (_, _, _, f), r in zip(batch, res["results"]):
            if f is not None:
                evidence[f] = r["memory"]["id"]
    full_tokens = sum(len(text) for (_, _, text, _) in turns) / 4
    hits, returned_tokens, lat = 0, [], []
    for i, (_, question) in enumerate(fs):
        res, ms = timed(lambda: api.call("POST", "/search", {"query": question, "top_k": 10}))
        lat.append(ms)
        ids = [r["memory"]["id"] for r in res["results"]]
        hits += evidence[i] in ids
        returned_tokens.append(sum(len(r["memory"]["content"]) for r in res["results"]) / 4)
    return {
        "turns": len(turns),
        "questions": len(fs),
        "evidence_recall_at_10": hits / len(fs),
        "tokens_returned_mean": sum(returned_tokens) / len(returned_tokens),
        "tokens_full_context": full_tokens,
        "tokens_saved": 1 - (sum(returned_tokens) / len(returned_tokens)) / full_tokens,
        "search_p50_ms": pct(lat, 0.5),
        "search_p95_ms": pct(lat, 0.95),
    }


def main():
    url, write_token, recall_token = sys.argv[1], sys.argv[2], sys.argv[3]
    api = Api(url, write_token)
    rng = random.Random(7)
    single = []
    for i in range(500):
        text = f"note {i}: " + filler(rng)
        _, ms = timed(lambda: api.call("POST", "/memories", {"content": text, "dedup": "off"}))
        single.append(ms)
    t = time.perf_counter()
    for b in range(10):
        api.call("POST", "/memories/batch", {"memories": [{"content": f"batch {b} item {i}: " + filler(rng), "dedup": "off"} for i in range(1000)]})
    batch_s = time.perf_counter() - t
    searches = []
    for i in range(300):
        q = " ".join(rng.choice(WORDS) for _ in range(5))
        _, ms = timed(lambda: api.call("POST", "/search", {"query": q, "top_k": 10}))
        searches.append(ms)
    out = {
        "write": {"single_adds": len(single), "p50_ms": pct(single, 0.5), "p95_ms": pct(single, 0.95), "p99_ms": pct(single, 0.99),
                  "batch_adds": 10_000, "batch_per_s": 10_000 / batch_s},
        "search": {"memories": 10_500, "searches": len(searches), "p50_ms": pct(searches, 0.5), "p95_ms": pct(searches, 0.95)},
        "recall": recall_bench(Api(url, recall_token)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
