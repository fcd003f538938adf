import pytest
from pertstore.store import Recipe, chunk_rows_for
from pydantic import ValidationError


def test_version_is_a_hash_of_the_canonical_recipe():
    a = Recipe(source="s", producer="p", kind="gene", params={"b": 1, "a": [1, 2]})
    b = Recipe(source="s", producer="p", kind="gene", params={"a": [1, 2], "b": 1})
    c = Recipe(source="s", producer="p", kind="gene", params={"a": [1, 2], "b": 2})
    assert a.version == b.version and len(a.version) == 16
    assert a.version != c.version
    assert a.canonical_json() == b.canonical_json()


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "with space"])
def test_names_must_be_path_safe(bad):
    with pytest.raises(ValidationError):
        Recipe(source=bad, producer="p", kind="gene")


def test_chunk_rows_scale_with_dim():
    assert chunk_rows_for(128) == 32  # 16 KiB
    assert chunk_rows_for(1280) == 2  # 10 KiB: the largest power of two within 16 KiB
    assert chunk_rows_for(16) == 256
    assert chunk_rows_for(100_000) == 1
    assert chunk_rows_for(1280, chunk_bytes=64 * 1024) == 8
