"""Identifier resolution inside FILESYSTEM_PREFIX (SPEC section 11)."""

from __future__ import annotations

import os

import pytest

from iipsrv_py.errors import NotFound
from iipsrv_py.storage.local import LocalStorage, normalise_identifier


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [("a.tif", "a.tif"), ("/a.tif", "a.tif"), ("dir//./b.tif", "dir/b.tif"), ("//x/y.tif", "x/y.tif")],
)
def test_normalised(identifier: str, expected: str) -> None:
    assert normalise_identifier(identifier) == expected


@pytest.mark.parametrize("identifier", ["../a.tif", "a/../../b.tif", "a\\b.tif", "a\0.tif", "", "/", "./."])
def test_refused(identifier: str) -> None:
    with pytest.raises(NotFound):
        normalise_identifier(identifier)


def test_prefix_and_suffix_are_concatenated(tmp_path) -> None:
    (tmp_path / "img_x.tif.pyr").write_bytes(b"data")
    storage = LocalStorage(str(tmp_path) + "/img_", ".pyr")
    location, identity = storage.resolve("x.tif")
    assert location == str(tmp_path / "img_x.tif.pyr")
    assert identity.size == 4


def test_symlink_out_of_the_root_is_refused_and_inside_is_allowed(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"secret")
    (root / "real.tif").write_bytes(b"real")
    os.symlink(outside, root / "escape.tif")
    os.symlink(root / "real.tif", root / "alias.tif")
    storage = LocalStorage(str(root) + "/")
    with pytest.raises(NotFound):
        storage.resolve("escape.tif")
    assert storage.resolve("alias.tif")[0] == str(root / "real.tif")


def test_missing_file_and_directory_are_not_found_without_paths_in_the_message(tmp_path) -> None:
    (tmp_path / "dir").mkdir()
    storage = LocalStorage(str(tmp_path) + "/")
    for name in ("missing.tif", "dir"):
        with pytest.raises(NotFound) as info:
            storage.resolve(name)
        assert str(tmp_path) not in info.value.message


def test_identity_changes_when_the_file_is_rewritten(tmp_path) -> None:
    path = tmp_path / "a.tif"
    path.write_bytes(b"one")
    storage = LocalStorage(str(tmp_path) + "/")
    first = storage.resolve("a.tif")[1]
    os.unlink(path)
    path.write_bytes(b"two")
    os.utime(path, (first.mtime, first.mtime))  # same size and mtime, new inode
    second = storage.resolve("a.tif")[1]
    assert first.token != second.token


def test_retargeted_link_is_resolved_again(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.tif").write_bytes(b"aaaa")
    outside = tmp_path / "outside.tif"
    outside.write_bytes(b"bbbb")
    link = root / "link.tif"
    os.symlink(root / "a.tif", link)
    storage = LocalStorage(str(root) + "/")
    location, _ = storage.resolve("link.tif")
    assert location == str(root / "a.tif")
    os.unlink(link)
    os.symlink(outside, link)  # now pointing out of the root
    with pytest.raises(NotFound):
        storage.resolve("link.tif")


def test_unchanged_revalidates_a_cached_answer(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    image = root / "a.tif"
    image.write_bytes(b"one")
    storage = LocalStorage(str(root) + "/")
    _, identity = storage.resolve("a.tif")
    assert storage.unchanged("a.tif", identity) and storage.unchanged("/a.tif", identity)
    image.write_bytes(b"two and more")  # rewritten in place: another size and mtime
    assert not storage.unchanged("a.tif", identity)
    _, identity = storage.resolve("a.tif")
    assert storage.unchanged("a.tif", identity)
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"two and more")
    image.unlink()
    image.symlink_to(outside)  # now a link out of the root: refused, not "unchanged"
    assert not storage.unchanged("a.tif", identity)
    image.unlink()
    assert not storage.unchanged("a.tif", identity)  # gone
    assert not storage.unchanged("../secret.tif", identity)  # refused identifier, no error
