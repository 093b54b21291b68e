"""cq_pb2.py is generated from cq.proto (make proto) and must stay in step with it: every
message, field, enum value of the .proto is in the generated module with the same number,
label and type, and nothing else is. Its gencode version is setup.py's lower bound for the
protobuf runtime, and the runtime under test is one setup.py accepts (`make test` runs this
file on the newest and on the oldest accepted runtime)."""

from __future__ import annotations

import re
from pathlib import Path

from google import protobuf
from google.protobuf.descriptor import FieldDescriptor
from packaging.requirements import Requirement
from packaging.version import Version

from cq_portage.cq import cq_pb2

HERE = Path(cq_pb2.__file__).parent
REPO = HERE.parents[1]
_FIELD = re.compile(r"^\s*(required|optional|repeated)\s+(\w+)\s+(\w+)\s*=\s*(\d+)", re.M)
_ENUM_VALUE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+)\s*;", re.M)


def label(field: FieldDescriptor) -> str:
    # is_required/is_repeated exist on 6.x and 7.x runtimes (7.x dropped .label).
    return "required" if field.is_required else "repeated" if field.is_repeated else "optional"


def proto_blocks(kind: str) -> dict[str, str]:
    """Top-level `message NAME { ... }` or `enum NAME { ... }` bodies, comments removed."""
    text = re.sub(r"//[^\n]*", "", (HERE / "cq.proto").read_text())
    return dict(re.findall(rf"^{kind}\s+(\w+)\s*\{{(.*?)^\}}", text, re.M | re.S))


def protobuf_requirement() -> Requirement:
    text = (REPO / "setup.py").read_text()
    [spec] = re.findall(r'"(protobuf[^"]*)"', text)
    return Requirement(spec)


def test_every_message_field_of_the_proto_is_generated():
    messages = proto_blocks("message")
    assert {"cq_req", "cq_rep", "job_info", "host_info"} <= set(messages)
    assert set(messages) == set(cq_pb2.DESCRIPTOR.message_types_by_name), \
        "cq_pb2.py has other messages than cq.proto: run `make proto`"
    count = 0
    for name, body in messages.items():
        descriptor = cq_pb2.DESCRIPTOR.message_types_by_name[name]
        wanted = {field: (int(number), kind, type_)
                  for kind, type_, field, number in _FIELD.findall(body)}
        have = {f.name: f for f in descriptor.fields}
        assert set(wanted) == set(have), (
            f"{name}: cq.proto {sorted(wanted)} != cq_pb2 {sorted(have)}: run `make proto`")
        for field, (number, kind, type_) in wanted.items():
            generated = have[field]
            assert generated.number == number, f"{name}.{field}: number"
            assert label(generated) == kind, f"{name}.{field}: not {kind}"
            if generated.message_type is not None:
                assert generated.message_type.name == type_
            elif generated.enum_type is not None:
                assert generated.enum_type.name == type_
            count += 1
    assert count >= 45  # cq_req 12, job_info 20, host_info 7, cq_rep 11 when written


def test_every_enum_value_of_the_proto_is_generated():
    enums = proto_blocks("enum")
    assert set(enums) == set(cq_pb2.DESCRIPTOR.enum_types_by_name)
    for name, body in enums.items():
        generated = {v.name: v.number for v in cq_pb2.DESCRIPTOR.enum_types_by_name[name].values}
        assert generated == {k: int(v) for k, v in _ENUM_VALUE.findall(body)}, name


def test_gencode_version_is_setup_pys_lower_bound():
    """A runtime older than the gencode refuses to load it; setup.py (and the ebuilds, which
    tests/packaging keeps equal) must start exactly there."""
    header = re.search(r"^# Protobuf Python Version: (\S+)$",
                       (HERE / "cq_pb2.py").read_text(), re.M)
    assert header, "cq_pb2.py has no gencode version header"
    lower = [s.version for s in protobuf_requirement().specifier if s.operator == ">="]
    assert lower == [header[1]], f"setup.py's protobuf bound {lower} != gencode {header[1]}"


def test_the_runtime_under_test_is_one_setup_py_accepts():
    requirement = protobuf_requirement()
    assert Version(protobuf.__version__) in requirement.specifier, (
        f"protobuf {protobuf.__version__} is outside setup.py's {requirement.specifier}")
    # And the generated module works on it: a round trip with every kind of field.
    job = cq_pb2.job_info(id=2**64 - 1, state=cq_pb2.DONE, args=["emerge", "=a/b-1"],
                          after=[1, 2], exit_status=0, submitted=1.5)
    reply = cq_pb2.cq_rep(internal_status=0, exit_status=0, jobs=[job], log=b"\0\xff")
    again = cq_pb2.cq_rep.FromString(reply.SerializeToString())
    assert again == reply and list(again.jobs[0].after) == [1, 2]
