"""cq-client: submit a command to a cq server and wait for it, or manage queued jobs.

Flags of the original cq_client (-h -p -E -P, command after --) plus --detach, --wait,
--status, --list, --cancel and --log. Exit status: the job's own, or 255 when the job could
not be run, was refused, cancelled or interrupted, or the server did not answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Imported where used, not here: json, pwd, subprocess and protobuf's json_format (alone
# ~35 ms). Scripts run cq-client once a job, so a plain submit loads only what it needs.
from .client import BadServerReply, Client, ClientError, Outcome
from .job import JobInfo, JobState
from .wire import DEFAULT_PORT, MAX_JOB_ID, BadRequest, Limits, host_message, job_message, \
    parse_after, parse_env, parse_labels

NOT_RUN = 255


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cq-client", add_help=False,
        usage="cq-client [-h HOST] [-p PORT] [-E NAME=value]... [-L LABEL]... "
              "[-A ID[,ID...]]... [-P SCRIPT] [--detach] "
              "-- COMMAND [ARG]...\n       cq-client [-h HOST] [-p PORT] "
              "(--wait ID [-P SCRIPT] | --status ID | --list | --cancel ID | --log ID)",
        description="Run a command on a cq server's queue, authenticated with MUNGE.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", default=os.environ.get("CQ_HOST", "127.0.0.1"),
                   help="server address (default $CQ_HOST or 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=int(os.environ.get("CQ_PORT", DEFAULT_PORT)),
                   help=f"server port (default $CQ_PORT or {DEFAULT_PORT})")
    p.add_argument("-E", dest="env", action="append", default=[], metavar="NAME=value",
                   help="set a variable in the job's environment (repeatable)")
    p.add_argument("-L", "--label", dest="labels", action="append", default=[],
                   metavar="LABEL", help="run only on a build host with this label, e.g. "
                                         "an architecture (repeatable: all of them)")
    p.add_argument("-A", "--after", dest="after", action="append", default=[],
                   metavar="ID[,ID...]", help="start only once these jobs have ended with "
                   "exit status 0; if one ends otherwise, fail without running (repeatable)")
    p.add_argument("-P", dest="post", metavar="SCRIPT",
                   help="run SCRIPT INTERNAL_STATUS EXIT_STATUS when the job has ended "
                        "(CQ_JOB_ID is set in its environment)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--detach", action="store_true",
                     help="queue the command, print its job id and exit")
    act.add_argument("--wait", type=job_id, metavar="ID", help="wait for job ID, as if submitted")
    act.add_argument("--status", type=job_id, metavar="ID", help="show job ID")
    act.add_argument("--list", action="store_true", help="show the queue")
    act.add_argument("--cancel", type=job_id, metavar="ID", help="cancel job ID")
    act.add_argument("--log", type=job_id, metavar="ID", help="print job ID's output")
    p.add_argument("-f", "--follow", action="store_true", help="with --log: until the job ends")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for an unreachable server (default 30)")
    p.add_argument("--legacy", action="store_true",
                   help="the server is an original cq server: wait for its answer, which "
                        "comes when the job ends, for as long as the connection lives")
    p.add_argument("--munge-socket", help="munged's socket (default: libmunge's default)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    submitting = not args.list and all(
        v is None for v in (args.wait, args.status, args.cancel, args.log))
    if submitting and not command:
        p.error("no command given (put it after --)")
    if command and not submitting:
        p.error("a command cannot be combined with --wait, --status, --list, --cancel, --log")
    try:
        parse_env(args.env)
        parse_labels(args.labels)
        after = parse_after_option(args.after)
    except BadRequest as e:
        p.error(str(e))
    if after and not submitting:
        p.error("--after goes with a command to submit")
    client = Client(args.host, args.port, args.munge_socket, args.timeout)
    try:
        if args.list:
            return show_list(client, args.json)
        if args.status is not None:
            return show_status(client, args.status, args.json)
        if args.cancel is not None:
            info = client.cancel(args.cancel)
            stopping = info.state == JobState.RUNNING
            say(args, f"job {info.id}: {'stopping' if stopping else 'cancelled'}")
            return 0
        if args.log is not None:
            return show_log(client, args.log, args.follow)
        if args.detach:
            submitted = client.submit(command, args.env, legacy=args.legacy,
                                      labels=args.labels, after=after)
            if isinstance(submitted, Outcome):  # the original server ran it already
                return finish(args, submitted)
            print(submitted.job_id)
            return 0
        progress = Progress(args)
        try:
            if args.wait is not None:
                outcome = client.wait(args.wait, progress)
            else:
                outcome = client.run(command, args.env, legacy=args.legacy, on_update=progress,
                                     labels=args.labels, after=after)
        finally:
            progress.done()  # end the updating line before anything else is printed
        return finish(args, outcome)
    except ClientError as e:
        print(f"cq-client: {e}", file=sys.stderr)
        bad = isinstance(e, BadServerReply)  # never read as the job's own status
        return NOT_RUN if submitting or args.wait is not None or bad else 1
    except KeyboardInterrupt:
        print("cq-client: interrupted; the job stays queued (see --wait)", file=sys.stderr)
        return 130
    except Exception as e:  # a reply no check above foresaw: one line, never a traceback
        print(f"cq-client: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return NOT_RUN
    finally:
        client.close()


def job_id(text: str) -> int:
    """A job id on the command line: a number the server's store can hold."""
    if not text.isdigit() or int(text) > MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"bad job id {text[:40]!r}: want a number from 0 to "
                                         f"{MAX_JOB_ID}, e.g. 42")
    return int(text)


def parse_after_option(values: list[str]) -> list[int]:
    """-A 3,4 -A 5: job ids, checked as the server checks them."""
    ids = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit():
                raise BadRequest(f"bad job id {part.strip()[:40]!r} in --after: want "
                                 "numbers, e.g. -A 3,4")
            ids.append(int(part))
    return list(parse_after(ids, Limits(max_after=1 << 20)))  # the server has the limit


def _waiting(j: JobInfo) -> bool:
    """Queued behind the jobs in its `after`: the server gives it no position."""
    return j.state == JobState.QUEUED and bool(j.after) and j.position is None


def _after(j: JobInfo) -> str:
    return ", ".join(map(str, j.after))


def say(args, text: str) -> None:
    if not args.quiet:
        print(f"cq-client: {text}", file=sys.stderr)


class Progress:
    """Shows the job's state on long waits: one updating line on a TTY, else a line a change."""

    def __init__(self, args):
        self.args, self.last, self.tty = args, None, sys.stderr.isatty()

    def __call__(self, info: JobInfo) -> None:
        if self.args.quiet:
            return
        text = f"job {info.id} {info.state}"
        if info.position is not None:
            text += f" (position {info.position})"
        elif _waiting(info):
            text += f" (after {_after(info)})"
        elif info.host:
            text += f" on {info.host}"
        if text != self.last:
            print(("\r" + text + "\033[K") if self.tty else f"cq-client: {text}",
                  file=sys.stderr, end="" if self.tty else "\n", flush=True)
            self.last = text

    def done(self) -> None:
        if self.tty and self.last and not self.args.quiet:
            print(file=sys.stderr)


def finish(args, outcome: Outcome) -> int:
    if args.json:
        import json
        print(json.dumps(outcome._asdict()))
    if outcome.internal_status < 0:
        say(args, f"job {outcome.job_id or ''} {outcome.state}: {outcome.error or 'not run'}")
        code = NOT_RUN
    else:
        code = outcome.exit_status
        if code:
            say(args, f"job {outcome.job_id or ''} exited with status {code}")
    if args.post:
        post = run_post(args.post, outcome)
        if post and code == 0:
            code = post
    return code


def run_post(script: str, outcome: Outcome) -> int:
    import subprocess
    env = dict(os.environ, CQ_JOB_ID=str(outcome.job_id or ""), CQ_JOB_STATE=outcome.state)
    try:
        status = subprocess.run([script, str(outcome.internal_status), str(outcome.exit_status)],
                                env=env).returncode
    except OSError as e:
        print(f"cq-client: cannot run post-script {script}: {e.strerror}", file=sys.stderr)
        return 127
    if status:
        print(f"cq-client: post-script {script} exited with status {status}", file=sys.stderr)
    return status


def _user(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _age(t: float) -> str:
    s = max(0, int(time.time() - t))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _dicts(records, message) -> list[dict]:
    """As protobuf's JSON mapping writes their messages (`message` makes one of a record)."""
    from google.protobuf.json_format import MessageToDict
    return [MessageToDict(message(r), preserving_proto_field_name=True) for r in records]


def show_list(client: Client, as_json: bool) -> int:
    jobs, hosts = client.overview()
    if as_json:
        import json
        print(json.dumps({"hosts": _dicts(hosts, host_message),
                          "jobs": _dicts(jobs, job_message)}))
        return 0
    if len(hosts) > 1 or not all(h.up for h in hosts):
        print(f"{'HOST':<12} {'STATE':<14} {'LABELS':<16} URL")
        for h in hosts:
            state = (f"down {_age(h.since)}" if not h.up
                     else f"job {h.job_id}" if h.job_id else "idle")
            print(f"{h.name:<12} {state:<14} {' '.join(h.labels) or '-':<16} {h.url}"
                  + (f"  ({h.error})" if h.error else ""))
        print()
    print(f"{'ID':>7} {'STATE':<14} {'HOST':<12} {'REQUESTER':<10} {'AGE':>5}  COMMAND")
    for j in jobs:
        state = str(j.state)
        if j.position is not None:
            state += f" #{j.position}"
        elif _waiting(j):
            state += f" (after {_after(j)})"
        elif j.state.ended:
            state += f" {j.exit_status}" if j.internal_status == 0 else ""
        labels = f"[{' '.join(j.labels)}] " if j.labels else ""
        print(f"{j.id:>7} {state:<14} {j.host or '-':<12} {_user(j.requester_uid):<10} "
              f"{_age(j.submitted):>5}  {labels}{' '.join(j.args)}")
    return 0


def show_status(client: Client, job_id: int, as_json: bool) -> int:
    j = client.status(job_id)
    if as_json:
        import json
        print(json.dumps(_dicts([j], job_message)[0]))
        return 0
    print(f"job {j.id}: {j.state}"
          + (f" (position {j.position})" if j.position is not None else "")
          + (" (waiting for the jobs it runs after)" if _waiting(j) else ""))
    print(f"  command:   {' '.join(j.args)}")
    print(f"  requester: {_user(j.requester_uid)} (uid {j.requester_uid}), runs as {j.run_as}")
    if j.labels:
        print(f"  labels:    {' '.join(j.labels)}")
    if j.after:
        print(f"  after:     {_after(j)}")
    if j.host:
        print(f"  host:      {j.host}" + (f" (attempt {j.attempts})" if j.attempts > 1 else ""))
    if j.state.ended:
        print(f"  result:    internal status {j.internal_status}, exit status {j.exit_status}"
              + (f" ({j.error})" if j.error else ""))
    if j.log_path:
        print(f"  log:       {j.log_path}")
    return 0


def show_log(client: Client, job_id: int, follow: bool) -> int:
    offset = 0
    while True:
        data, offset, eof = client.log(job_id, offset)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if eof or (not data and not follow):
            return 0
        if not data:
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
