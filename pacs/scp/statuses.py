"""How ingest outcomes become C-STORE statuses (PS3.4 Annex B.2.3), in one table, and how
every DIMSE service writes a status with an Error Comment."""

from __future__ import annotations

from pydicom.dataset import Dataset

from pacs.ingest import IngestResult, IngestStatus

SUCCESS = 0x0000
#: IngestStatus -> C-STORE status. Refusals carry the reason in ErrorComment (0000,0902).
STORE_STATUS: dict[IngestStatus, int] = {
    IngestStatus.STORED: SUCCESS,
    # Already stored: the archive holds the instance, so the sender may rely on it.
    IngestStatus.ALREADY_STORED: SUCCESS,
    IngestStatus.INVALID: 0xC000,  # Error: cannot understand
    IngestStatus.UNSUPPORTED_SOP_CLASS: 0x0122,  # Refused: SOP class not supported
    IngestStatus.STORAGE_FULL: 0xA700,  # Refused: out of resources
    IngestStatus.FAILED: 0x0110,  # Failure: processing failure
}
ERROR_COMMENT_MAX = 64  # ErrorComment is LO: at most 64 characters


def store_status(result: IngestResult) -> int | Dataset:
    """The C-STORE response status for an ingest result (PS3.4 Table B.2-1).

    Returns
    -------
    int or Dataset
        The status code alone when there is nothing more to say (success, or a refusal
        without a reason); otherwise a status dataset with Status and ErrorComment.
    """
    code = STORE_STATUS[result.status]
    if code == SUCCESS or not result.reason:
        return code
    return status_with_comment(code, result.reason)


def status_with_comment(code: int, comment: str) -> Dataset:
    """A DIMSE status dataset: Status and an Error Comment every peer can show.

    Error Comment is LO (PS3.7 C.4.1.1.4): at most 64 characters, no backslash; the text is
    kept to printable ASCII, and a longer one ends in "...".
    """
    status = Dataset()
    status.Status = code
    status.ErrorComment = _error_comment(comment)
    return status


def _error_comment(reason: str) -> str:
    # LO excludes backslash and control characters; keep it to printable ASCII so every
    # peer can show it, whatever character set it speaks.
    text = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in reason)
    return text if len(text) <= ERROR_COMMENT_MAX else text[: ERROR_COMMENT_MAX - 3] + "..."
