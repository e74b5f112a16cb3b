"""The IIP data commands' syntax (SPEC section 4): PFL ``res:x1,y1-x2,y2``, SPECTRA
``res,tile,x,y`` and TIL ``res,start[-end]``.

Cases written from the SPEC's argument forms, then Hypothesis: any argument gives a command or
IIP error ``2 1``, and a command's canonical form parses back to the same command.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iipsrv_py.errors import IIPError
from iipsrv_py.protocols.iip import Command, Fif, Wid, parse
from iipsrv_py.protocols.iip_data import PARSERS, Pfl, Spectra, Til


def only(query: str) -> Command:
    (command,) = parse(query).commands
    return command


def error_code(query: str) -> str:
    with pytest.raises(IIPError) as caught:
        parse(query)
    return caught.value.code


@pytest.mark.parametrize(
    ("query", "expected", "canonical"),
    [
        ("PFL=0:1,2-30,2", Pfl(0, (1, 2), (30, 2)), "PFL=0:1,2-30,2"),
        ("pfl=3:0,10-0,400", Pfl(3, (0, 10), (0, 400)), "PFL=3:0,10-0,400"),
        # Numbers read as everywhere in IIP: blanks and "5.0" accepted.
        ("PFL= 2 : 5.0 , 6 - 7 , 8", Pfl(2, (5, 6), (7, 8)), "PFL=2:5,6-7,8"),
        # A single point names both ends; a line may run backwards (the handler reads it so).
        ("PFL=1:4,4-4,4", Pfl(1, (4, 4), (4, 4)), "PFL=1:4,4-4,4"),
        ("PFL=1:9,4-2,4", Pfl(1, (9, 4), (2, 4)), "PFL=1:9,4-2,4"),
        # Numbers out of any image still parse: ranges are the handler's (404).
        ("PFL=9:0,0-99999,0", Pfl(9, (0, 0), (99999, 0)), "PFL=9:0,0-99999,0"),
        ("PFL=-1:0,0-1,-1", Pfl(-1, (0, 0), (1, -1)), "PFL=-1:0,0-1,-1"),
        ("SPECTRA=1,0,5,7", Spectra(1, 0, 5, 7), "SPECTRA=1,0,5,7"),
        ("Spectra=2,3,4.0,5", Spectra(2, 3, 4, 5), "SPECTRA=2,3,4,5"),
        ("SPECTRA=0,-1,300,-2", Spectra(0, -1, 300, -2), "SPECTRA=0,-1,300,-2"),
        ("TIL=2,0-5", Til(2, 0, 5), "TIL=2,0-5"),
        ("til=2,7", Til(2, 7, 7), "TIL=2,7"),
        ("TIL=2,7-7", Til(2, 7, 7), "TIL=2,7"),
        ("TIL=99,0-5", Til(99, 0, 5), "TIL=99,0-5"),
    ],
)
def test_data_commands_parse_to_their_canonical_form(query: str, expected: Command, canonical: str) -> None:
    command = only(query)
    assert command == expected
    assert command.canonical == canonical
    assert only(canonical) == expected


def test_data_commands_run_among_the_others() -> None:
    request = parse("FIF=a.tif&WID=5&TIL=1,0-3")
    assert request.commands == (Fif("a.tif"), Wid(5), Til(1, 0, 3))
    assert request.canonical == "FIF=a.tif&WID=5&TIL=1,0-3"


@pytest.mark.parametrize(
    "query",
    [
        "PFL=a",
        "PFL=1:1,2",  # one point only: the SPEC's form names both ends
        "PFL=1",
        "PFL=:1,2-3,4",
        "PFL=1:1,2-3",
        "PFL=1:1,2,3-4,5",
        "PFL=1:-1,2-3,4",  # a negative start cannot be told from the separator
        "PFL=1:1,2-3,4,5",
        "PFL=x:1,2-3,4",
        "PFL=1:1,2-3,nan",
        "PFL=1:1,2-3,1e400",
        "SPECTRA=1,2,3",
        "SPECTRA=1,2,3,4,5",
        "SPECTRA=a,b,c,d",
        "SPECTRA=1,,3,4",
        "TIL=1",
        "TIL=1,",
        "TIL=1,a",
        "TIL=1,2-",
        "TIL=1,-3",
        "TIL=0,5-2",  # the range runs backwards
        "TIL=1,2-3-4",
        "TIL=,2",
    ],
)
def test_malformed_arguments_are_iip_error_2_1(query: str) -> None:
    assert error_code(query) == "2 1"


names = st.sampled_from(sorted(PARSERS))
argument = st.one_of(
    st.text(alphabet=st.sampled_from("0123456789,:-. +ae"), max_size=16),
    st.lists(st.integers(-3, 70000).map(str), min_size=1, max_size=5).map(",".join),
    st.tuples(*[st.integers(0, 5000)] * 5).map(lambda v: f"{v[0]}:{v[1]},{v[2]}-{v[3]},{v[4]}"),
    st.tuples(st.integers(0, 9), st.integers(0, 99), st.integers(0, 99)).map(lambda v: f"{v[0]},{v[1]}-{v[2]}"),
    st.text(max_size=8).filter(lambda text: "&" not in text),  # "&" would start another command
)


@given(name=names, raw=argument)
@settings(max_examples=800)
def test_any_argument_gives_a_command_or_error_2_1_and_round_trips(name: str, raw: str) -> None:
    try:
        request = parse(f"{name}={raw}")
    except IIPError as exc:
        assert exc.code == "2 1"
        return
    again = parse(request.canonical)
    assert again == request
    assert again.canonical == request.canonical
