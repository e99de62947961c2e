"""The table's own consistency check, as an assertion with the problems in its message."""

from channelsd.table import ChannelTable


def assert_indices_agree(table: ChannelTable) -> None:
    problems = table.problems()
    assert not problems, "; ".join(problems)
