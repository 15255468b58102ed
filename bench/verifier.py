"""How many of Warden's access tokens the verifier library checks per second on one core.

A key set server in a thread of this process publishes an Ed25519 and a P-256 key; the
verifier fetches it once (the warm cache), then verifies pre-made, distinct tokens in a loop
for a few seconds per row, pinned to one CPU. Rows: the library's `verify` and `verify_async`
for each algorithm, a bare `jwt.decode` of the same tokens (what PyJWT alone costs), and two
refusals (an unknown kid within the refetch window, `alg: none`). "per CPU-second" divides by
the process's CPU time, so time the scheduler gave to other processes is not counted.

    PYTHONPATH=verifier uv run python -m bench.verifier [--seconds 3] [--repeat 3]

(the library is its own package, not one of the project's: `PYTHONPATH` finds it in the tree)
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from warden_verifier import VerificationError, Verifier

ISSUER = "warden"
TOKENS = 2000


def signing_keys() -> dict[str, tuple[Any, dict[str, Any]]]:
    ed = ed25519.Ed25519PrivateKey.generate()
    es = ec.generate_private_key(ec.SECP256R1())
    return {
        "EdDSA": (ed, OKPAlgorithm.to_jwk(ed.public_key(), as_dict=True)),
        "ES256": (es, ECAlgorithm.to_jwk(es.public_key(), as_dict=True)),
    }


def serve(document: dict[str, Any]) -> http.server.HTTPServer:
    body = json.dumps(document).encode()

    class KeySet(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), KeySet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tokens(private: Any, alg: str, kid: str) -> list[str]:
    now = int(time.time())
    made = []
    for _ in range(TOKENS):
        claims = {
            "iss": ISSUER,
            "sub": "42",
            "sid": uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "type": "access",
            "iat": now,
            "exp": now + 3600,
        }
        made.append(jwt.encode(claims, private, algorithm=alg, headers={"kid": kid}))
    return made


def rate(fn: Callable[[str], object], made: list[str], seconds: float) -> tuple[float, float]:
    """(per wall second, per CPU second) of `fn` over `made`, cycled for `seconds`."""
    count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        for token in made[:200]:
            fn(token)
        count += 200
        made = made[200:] + made[:200]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return count / wall, count / cpu


def refusing(verify: Callable[[str], object]) -> Callable[[str], object]:
    def run(token: str) -> object:
        try:
            return verify(token)
        except VerificationError as error:
            return error.code

    return run


def bare_decode(public: Any, alg: str) -> Callable[[str], object]:
    options: Any = {"require": ["iss", "sub", "sid", "jti", "type", "iat", "exp"]}

    def decode(token: str) -> object:
        return jwt.decode(token, public, algorithms=[alg], issuer=ISSUER, options=options)

    return decode


def sync_of(verifier: Verifier) -> Callable[[str], object]:
    loop = asyncio.new_event_loop()

    def run(token: str) -> object:
        return loop.run_until_complete(verifier.verify_async(token))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpu = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpu)})
    keys = signing_keys()
    kids = {alg: uuid.uuid4().hex for alg in keys}
    server = serve(
        {"keys": [jwk | {"kid": kids[a], "use": "sig", "alg": a} for a, (_, jwk) in keys.items()]}
    )
    url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    verifier = Verifier(url, issuer=ISSUER, min_refetch_interval=3600)
    # Every token new: nothing remembered, each one's signature checked.
    fresh = Verifier(url, issuer=ISSUER, min_refetch_interval=3600, verified_tokens=0)
    made = {alg: tokens(private, alg, kids[alg]) for alg, (private, _) in keys.items()}
    for alg in keys:
        verifier.verify(made[alg][0])  # the warm cache: fetched once, here
        fresh.verify(made[alg][0])
    unknown = tokens(keys["EdDSA"][0], "EdDSA", "not-published")
    none = [f"{t.split('.')[0]}.{t.split('.')[1]}." for t in made["EdDSA"]]
    none = [
        t.replace(t.split(".")[0], jwt.utils.base64url_encode(b'{"alg":"none"}').decode())
        for t in none
    ]
    rows: list[tuple[str, Callable[[str], object], list[str]]] = []
    for alg in keys:
        public = jwt.PyJWK(keys[alg][1], algorithm=alg).key
        rows += [
            (f"{alg}: verify, every token new", fresh.verify, made[alg]),
            (f"{alg}: verify_async, every token new (1 loop run each)", sync_of(fresh), made[alg]),
            (f"{alg}: verify, {TOKENS} tokens in use (remembered)", verifier.verify, made[alg]),
            (f"{alg}: bare jwt.decode (PyJWT alone)", bare_decode(public, alg), made[alg]),
        ]
    # The ceiling: the signature check alone (OpenSSL through `cryptography`), no JWT at all.
    ed_private = keys["EdDSA"][0]
    message = made["EdDSA"][0].rpartition(".")[0].encode()
    signature = ed_private.sign(message)
    ed_public = ed_private.public_key()

    def signature_only(_token: str) -> object:
        ed_public.verify(signature, message)
        return None

    rows.append(("EdDSA: the signature check alone (no JWT)", signature_only, made["EdDSA"]))
    rows += [
        ("refused: unknown kid (within the refetch window)", refusing(verifier.verify), unknown),
        ("refused: alg none", refusing(verifier.verify), none),
    ]
    print(
        f"# verifier benchmark: Python {platform.python_version()}, PyJWT {jwt.__version__}, "
        f"pinned to CPU {min(cpu)}, load average {os.getloadavg()[0]:.2f}, "
        f"median of {args.repeat} x {args.seconds:g} s"
    )
    print(f"| {'what':<48} | {'per wall second':>16} | {'per CPU-second':>15} |")
    print(f"|{'-' * 50}|{'-' * 18}:|{'-' * 17}:|")
    for name, fn, sample in rows:
        runs = [rate(fn, sample, args.seconds) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        per_cpu = statistics.median(r[1] for r in runs)
        print(f"| {name:<48} | {wall:>16,.0f} | {per_cpu:>15,.0f} |")
    print(
        f"key set fetches during the run: {verifier.keys.fetches} "
        f"(1 at warm-up; unknown kids within the 3600 s window fetch nothing)"
    )
    server.shutdown()


if __name__ == "__main__":
    main()
