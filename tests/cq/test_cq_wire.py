"""Request parsing: what the server accepts and the one-line reasons it refuses with."""

import pytest

from cq_portage.cq import cq_pb2 as pb
from cq_portage.cq.wire import BadRequest, Limits, Op, build_request, credential_from_frame, \
    parse_request

LIMITS = Limits()


def original(args, env=()):
    """A payload exactly as the original C client packs it: markers and all."""
    return pb.cq_req(command=args[0], args=[*args, ""], env=[*env, ""]).SerializeToString()


def test_original_request_strips_end_markers_and_is_legacy():
    req = parse_request(original(["emerge", "-1", "foo"], ["USE=ssl"]), LIMITS)
    assert req.argv == ("emerge", "-1", "foo")
    assert req.env == (("USE", "ssl"),)
    assert req.legacy and req.op == Op.SUBMIT


def test_our_request_round_trips_and_is_not_legacy():
    req = parse_request(build_request(Op.SUBMIT, ["a", ""], ["X=1"], dedupe_key="k"), LIMITS)
    assert req.argv == ("a", "")  # a real empty argument survives: only one marker goes
    assert req.env == (("X", "1"),) and req.dedupe_key == "k" and not req.legacy


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xff\xff", "malformed request"),
    (pb.cq_req(args=["x", ""]).SerializePartialToString(), "required field 'command' missing"),
    (pb.cq_req(command="", args=[""], env=[""]).SerializeToString(), "empty command"),
    (original(["x"], ["NOEQUALS"]), "malformed environment entry"),
    (original(["x"], ["1BAD=v"]), "malformed environment entry"),
    (original(["x", "a\0b"]), "NUL"),
    (build_request(Op.WAIT), "WAIT needs a job id"),
])
def test_refusals(payload, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_request(payload, LIMITS)


def test_non_utf8_strings_are_refused():
    # proto2 strings are not checked by the parser: build a field by hand (tag 2, length 2).
    payload = pb.cq_req(command="x").SerializeToString() + b"\x12\x02\xff\xfe"
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        parse_request(payload, LIMITS)


def test_limits():
    small = Limits(max_request_bytes=100, max_args=3, max_env=2, max_string_bytes=10)
    with pytest.raises(BadRequest, match="exceeds 100"):
        parse_request(original(["x" * 8] * 20), small)
    with pytest.raises(BadRequest, match="more than 3 arguments"):
        parse_request(original(["a", "b", "c", "d"]), small)
    with pytest.raises(BadRequest, match="more than 2 environment"):
        parse_request(original(["a"], ["A=1", "B=2", "C=3"]), small)
    with pytest.raises(BadRequest, match="longer than 10 bytes"):
        parse_request(original(["a" * 11]), small)


def test_credential_frame():
    assert credential_from_frame(b"MUNGE:abc:\0") == b"MUNGE:abc:"
    for frame in (b"", b"hello", b"MUNGE:a\0b\0"):
        with pytest.raises(BadRequest):
            credential_from_frame(frame)
