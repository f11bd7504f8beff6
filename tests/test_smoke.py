from minibatch_rx import Stream


def test_append_and_read_roundtrip(store_url: str) -> None:
    s = Stream.get_or_create("smoke", url=store_url)
    assert s.append({"a": 1}) == 1
    assert s.extend([{"a": 2}, {"a": 3}]) == [2, 3]
    assert [m.data["a"] for m in s.read()] == [1, 2, 3]
    assert len(s) == 3
