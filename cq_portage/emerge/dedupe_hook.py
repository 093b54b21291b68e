"""cq-server's incoming hook for cq-emerge's builds: one build per package instance.

cq-emerge gives every build job a dedupe key naming the package instance (cpv, repository,
enabled USE, other build variables, command). The server's own dedupe merges only identical
command lines and environments; two groups whose variables differ only where the build does
not care (or two hosts whose environments list them in another order) still make the same
binary package, and this hook merges those: a new job joins the running or queued job with
its key and run-as user (a build of that instance under way is the work asked for). Jobs
without a key (not cq-emerge's) are accepted as they are.

Configure it in the server's config:  incoming_hook: [cq-emerge-hook]  (looked up in PATH)
"""

from __future__ import annotations

import json
import sys


def decide(request: dict) -> dict:
    job = request["job"]
    key = job.get("dedupe_key")
    if key:
        for other in request["queue"]:
            if (other["state"] in ("queued", "running") and other.get("dedupe_key") == key
                    and other["run_as"] == job["run_as"]):
                return {"action": "merge", "job": other["id"]}
    return {"action": "accept"}


def main() -> int:
    try:
        request = json.load(sys.stdin)
        answer = decide(request)
    except (ValueError, KeyError, TypeError) as e:
        print(f"cq-emerge-hook: bad request from cq-server: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
