"""Group commit: callers that arrive together share one commit and get their own outcome."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pacs.groupcommit import GroupCommit


class Recorder:
    """A commit that records its groups and holds the first one until released."""

    def __init__(self):
        self.groups = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()

    def __call__(self, items):
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.first_started.set()
            self.release_first.wait(10)
        return [item * 10 for item in items]


def test_a_lone_caller_commits_its_own_item():
    commits = GroupCommit(lambda items: [item + 1 for item in items], max_group=8)
    assert commits.submit(41) == 42


def submit_behind_a_running_commit(commits, recorder, later):
    """Submit 0, and ``later`` while the commit of 0 runs; return every caller's outcome."""
    with ThreadPoolExecutor(len(later) + 1) as pool:
        first = pool.submit(commits.submit, 0)
        assert recorder.first_started.wait(10)
        waiting = [pool.submit(commits.submit, item) for item in later]
        while commits.waiting < len(later):  # all queued behind the running commit
            threading.Event().wait(0.01)
        recorder.release_first.set()
        return [future.result() for future in [first, *waiting]]


def test_callers_arriving_during_a_commit_share_the_next_one():
    recorder = Recorder()
    outcomes = submit_behind_a_running_commit(GroupCommit(recorder, max_group=8), recorder,
                                              [1, 2, 3, 4, 5])
    assert outcomes == [0, 10, 20, 30, 40, 50]
    assert recorder.groups[0] == [0]
    assert sorted(recorder.groups[1]) == [1, 2, 3, 4, 5]


def test_a_group_holds_at_most_max_group_items():
    recorder = Recorder()
    outcomes = submit_behind_a_running_commit(GroupCommit(recorder, max_group=2), recorder,
                                              [1, 2, 3, 4, 5])
    assert outcomes == [0, 10, 20, 30, 40, 50]
    assert all(len(group) <= 2 for group in recorder.groups)
    assert sorted(item for group in recorder.groups for item in group) == [0, 1, 2, 3, 4, 5]


def test_a_failed_commit_fails_every_caller_of_its_group_and_no_other():
    def commit(items):
        if 13 in items:
            raise OSError("disk gone")
        return items

    commits = GroupCommit(commit, max_group=8)
    with pytest.raises(OSError, match="disk gone"):
        commits.submit(13)
    assert commits.submit(7) == 7


def test_a_commit_returning_the_wrong_number_of_outcomes_fails_its_callers():
    commits = GroupCommit(lambda items: [], max_group=8)
    with pytest.raises(RuntimeError, match="0 outcomes for a group of 1"):
        commits.submit(1)
