"""S3 facts the catalog needs without loading boto3 (s3client re-exports them)."""

from __future__ import annotations

ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
HEAD_THREADS = 8
