"""tfrecords_tools.base.words: counts in words."""

from tfrecords_tools.base.words import count


def test_counts_in_words():
    assert [count(n, "image") for n in (0, 1, 2, 1281167)] == [
        "0 images", "1 image", "2 images", "1,281,167 images"]
    assert count(1, "class", "classes") == "1 class" and count(3, "class", "classes") == \
        "3 classes"
