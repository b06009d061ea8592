"""contextd.record: the dataclass semantics contextd relies on, without code generation."""

import subprocess
import sys

import pytest

from contextd import logs
from contextd.record import FrozenRecordError, field, fields, record


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: list = field(default_factory=list, compare=False)
    token: str = field(default="", repr=False)


@record
class Counter:
    name: str
    seen: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name is empty")


@record(frozen=True)
class Point3(Point):
    z: int = 0


def test_init_positional_keyword_and_defaults() -> None:
    p = Point(1, token="s3cret")
    assert (p.x, p.y, p.tags, p.token) == (1, 0, [], "s3cret")
    assert Point(x=2, y=3).y == 3
    assert Point(1).tags is not Point(1).tags          # a fresh default each time
    assert Point.y == 0                                 # plain defaults stay class attributes
    assert not hasattr(Point, "tags")                   # field() ones do not


@pytest.mark.parametrize(("call", "message"), [
    (lambda: Point(), "missing required argument 'x'"),
    (lambda: Point(1, x=2), "multiple values for argument 'x'"),
    (lambda: Point(1, 2, [], "t", 5), "takes 4 positional arguments but 5 were given"),
    (lambda: Point(1, colour="red"), "unexpected keyword argument 'colour'"),
])
def test_bad_calls_are_type_errors(call, message) -> None:
    with pytest.raises(TypeError, match=message):
        call()


def test_frozen_refuses_assignment_and_hashes_on_compared_fields() -> None:
    p = Point(1, 2)
    with pytest.raises(FrozenRecordError):
        p.x = 5
    with pytest.raises(AttributeError):
        del p.y
    assert p == Point(1, 2, tags=["ignored by eq"])
    assert hash(p) == hash(Point(1, 2, tags=["other"]))
    assert p != Point(1, 3)
    assert p != (1, 2)                                  # only the exact class compares equal
    assert len({p, Point(1, 2)}) == 1


def test_mutable_record_is_unhashable_and_runs_post_init() -> None:
    c = Counter("a")
    c.seen.append(1)
    c.name = "b"
    assert c == Counter("b", [1])
    with pytest.raises(TypeError):
        hash(c)
    with pytest.raises(ValueError, match="name is empty"):
        Counter("")


def test_repr_hides_secret_fields() -> None:
    text = repr(Point(1, token="s3cret"))
    assert text == "Point(x=1, y=0, tags=[])"


def test_inherited_fields_come_first() -> None:
    assert [f.name for f in fields(Point3)] == ["x", "y", "tags", "token", "z"]
    assert Point3(1, z=4).z == 4


def test_required_after_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        @record
        class Bad:
            a: int = 0
            b: int


def test_secrets_of_records_and_site_dataclasses_are_masked() -> None:
    import dataclasses

    @dataclasses.dataclass
    class SitePluginSettings:       # a site plugin may still use dataclasses
        password: str = dataclasses.field(repr=False, default="")

    logs.add_secrets_of({"a": Point(1, token="record-secret"),
                         "b": [SitePluginSettings("dataclass-secret")]})
    assert logs.redact("x record-secret y dataclass-secret") == "x [secret] y [secret]"


def test_boot_path_imports_no_dataclasses() -> None:
    # The reason this module exists: importing what a run needs builds no dataclass.
    code = ("import sys, contextd.run, contextd_plugins.cvmfs, contextd_plugins.htcondor, "
            "contextd_plugins.puppet; print('dataclasses' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
