"""Changes as the CLI's --json reports them (``change_data``: kind,
subject, detail, netns): tests look at kinds and subjects, never at the
words of a change."""

from ansible_collections.vmsan.network.plugins.module_utils.model import changes as C  # noqa: F401  (kinds)


def of_kind(out, kind, subject=None):
    """The changes of OUT (a change result's JSON) of KIND (and SUBJECT)."""
    return [c for c in out["change_data"] if c["kind"] == kind and subject in (None, c["subject"])]
