"""The incoming hook: an admin's executable that decides what a new job becomes.

It reads {"job": {...}, "queue": [...]} as JSON on stdin (the queue: the running job, then
the queued ones) and answers on stdout with one of {"action": "accept"},
{"action": "merge", "job": ID} (a queued or the running job; the new submitter waits for
its result, and the job keeps its own "after": the ids of the jobs it waits for) or
{"action": "reject", "reason": "..."}.
A hook that fails, times out or answers anything else rejects the job, saying why.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from .serverjob import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    action: str  # accept | merge | reject
    job_id: int | None = None
    reason: str | None = None


def job_json(job: Job) -> dict:
    return {"id": job.id, "state": job.state.value, "command": job.command,
            "argv": list(job.argv), "env": dict(job.env), "dedupe_key": job.dedupe_key,
            "requester_uid": job.requester_uid, "requester_gid": job.requester_gid,
            "run_as": str(job.run_as), "submitted": job.submitted, "after": list(job.after)}


def parse_decision(text: str) -> Decision:
    try:
        answer = json.loads(text)
    except ValueError:
        raise ValueError(f"answer is not JSON: {text[:80]!r}") from None
    if not isinstance(answer, dict):
        raise ValueError("answer is not a JSON object")
    action = answer.get("action")
    if action == "accept":
        return Decision("accept")
    if action == "merge" and isinstance(answer.get("job"), int) and not isinstance(
            answer["job"], bool):
        return Decision("merge", job_id=answer["job"])
    if action == "reject":
        return Decision("reject", reason=str(answer.get("reason") or "rejected by the hook"))
    raise ValueError(f"unknown answer {text[:80]!r}")


async def ask(argv: tuple[str, ...], timeout: float, job: Job, queue: list[Job]) -> Decision:
    request = json.dumps({"job": job_json(job), "queue": [job_json(j) for j in queue]})
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        return _failed(argv, f"cannot run: {e.strerror}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(request.encode()), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return _failed(argv, f"no answer within {timeout:g}s")
    if proc.returncode != 0:
        return _failed(argv, f"exit status {proc.returncode}: "
                             f"{err.decode(errors='replace').strip()[:200]}")
    try:
        return parse_decision(out.decode(errors="replace"))
    except ValueError as e:
        return _failed(argv, str(e))


def _failed(argv: tuple[str, ...], why: str) -> Decision:
    log.error("incoming hook %s failed: %s", argv[0], why)
    return Decision("reject", reason=f"incoming hook failed: {why}")
