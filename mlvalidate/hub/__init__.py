"""The pinned weights from the hub: pull (download at one commit) and verify (every problem of a directory)."""
