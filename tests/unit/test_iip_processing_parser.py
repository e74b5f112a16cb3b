"""The processing commands' argument forms (SPEC section 4), their canonical forms, and how
they fold into a view's Ops."""

from __future__ import annotations

import pytest

from iipsrv_py.errors import IIPError
from iipsrv_py.handlers.iip import processing
from iipsrv_py.model import Ops
from iipsrv_py.protocols.iip import Bit, Cmp, Cnt, Cnv, Col, Ctw, Gam, Inv, MinMax, Rot, Shd, parse


def only(query: str):
    (command,) = parse(query).commands
    return command


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("CNT=1.5", Cnt(factor=1.5)),
        ("CNT=st", Cnt(mode="stretch")),
        ("CNT=stretch", Cnt(mode="stretch")),
        ("CNT=eq", Cnt(mode="equalization")),
        ("CNT=EQUALIZATION", Cnt(mode="equalization")),
        ("GAM=2.2", Gam(gamma=2.2)),
        ("GAM=log", Gam(log=True)),
        ("GAM=logarithm", Gam(log=True)),
        ("MINMAX=2:10,300.5", MinMax(1, 10.0, 300.5)),
        ("MINMAX=-:0,1", MinMax(-1, 0.0, 1.0)),
        ("INV=1", Inv()),
        ("INV=true", Inv()),
        ("CMP=Jet", Cmp("jet")),
        ("CTW=[1,0,0;0,1,0;0,0,1]", Ctw(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))),
        ("CTW=%5B0.3,0.6,0.1%5D", Ctw(((0.3, 0.6, 0.1),))),
        ("COL=grey", Col("gray")),
        ("COL=gray", Col("gray")),
        ("COL=binary", Col("bitonal")),
        ("SHD=30,45", Shd(30.0, 45.0)),
        ("CNV=sobel", Cnv((), "sobel")),
        ("CNV=[0,0,0,0,1,0,0,0,0]", Cnv((0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0))),
        ("ROT=90", Rot(90.0, False)),
        ("ROT=!450", Rot(90.0, True)),
        ("ROT=-90", Rot(270.0, False)),
        ("BIT=16", Bit(16)),
    ],
)
def test_arguments(query: str, expected) -> None:
    assert only(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "FIF=a.tif&CNT=1.5&GAM=log&MINMAX=2:10,300&INV=1&CMP=hot&CTW=[1,0,0;0,1,0;0,0,1]&COL=binary"
        "&SHD=30,45&CNV=[1,2,1,2,4,2,1,2,1]&ROT=!33.5&BIT=16&CVT=png",
        "FIF=a.tif&CNT=eq&CNV=emboss&MINMAX=-:0,1&PTL=1,2",
    ],
)
def test_canonical_form_parses_back_to_the_same_request(query: str) -> None:
    request = parse(query)
    assert parse(request.canonical) == request


@pytest.mark.parametrize(
    "query",
    [
        "CTW=[[[[",
        "CTW=[]",
        "CTW=[1,2;3,4]",
        "CTW=1,2,3",
        "CNV=[1,2]",
        "CNV=[1",
        "CNV=[a,b,c,d,e,f,g,h,i]",
        "GAM=nan",
        "GAM=0",
        "GAM=-2",
        "GAM=1e7",
        "ROT=1e309",
        "ROT=inf",
        "CNT=-1",
        "MINMAX=1",
        "MINMAX=0:1,2",
        "MINMAX=65:1,2",
        "MINMAX=1:1,2,3",
        "CMP=rainbow",
        "SHD=1,2,3",
        "BIT=32",
    ],
)
def test_malformed_arguments(query: str) -> None:
    with pytest.raises(IIPError) as caught:
        parse("FIF=a.tif&" + query)
    assert caught.value.code == "2 1"


def test_empty_arguments_are_ignored() -> None:
    # SPEC section 2, rule 5: a pair with an empty value is no command at all.
    assert parse("FIF=a.tif&CNT=&COL=&CVT=png") == parse("FIF=a.tif&CVT=png")


def fold(query: str) -> Ops:
    ops = Ops()
    for command in parse(query).commands:
        ops = processing(command, ops)
    return ops


def test_commands_fold_into_ops() -> None:
    ops = fold("CNT=2&GAM=0.5&INV=1&CMP=hot&COL=gray&ROT=!90&CNV=sobel&BIT=16")
    assert (ops.contrast, ops.gamma, ops.invert, ops.cmap, ops.colour) == (2.0, 0.5, True, "hot", "gray")
    assert (ops.rotation, ops.mirror, ops.bits) == (90.0, True, 16)
    assert ops.kernel == (-1, 0, 1, -2, 0, 2, -1, 0, 1)
    assert ops.float_stage and ops.changes_colours


def test_later_command_replaces_earlier_and_minmax_accumulates() -> None:
    ops = fold("GAM=2&GAM=log&CNT=3&CNT=st&MINMAX=1:0,10&MINMAX=2:5,6&MINMAX=1:1,2")
    assert ops.log and ops.tone == "stretch" and ops.contrast == 1.0
    assert sorted(ops.minmax) == [(0, 1.0, 2.0), (1, 5.0, 6.0)]
    assert fold("MINMAX=1:0,10&MINMAX=-:3,4").minmax == ((-1, 3.0, 4.0),)


def test_ops_canonical_tells_processing_apart() -> None:
    texts = {fold(q).canonical for q in ("", "INV=1", "GAM=2", "GAM=log", "CNT=2", "CMP=red", "CMP=blue", "ROT=90")}
    assert len(texts) == 8
    assert fold("").none and not fold("INV=1").none
