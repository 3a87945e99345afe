"""Where the cloud bulk job's inputs and parts live (standard library only: the CDK app imports
it at synth, face_dedup.cloud_bulk at run time)."""

from __future__ import annotations

UPLOAD_PREFIX = "bulk"  # bulk/<tenant>/<batch>/<file> + manifest.csv in the uploads bucket
MANIFEST_NAME = "manifest.csv"  # the import manifest's format: file,application_id[,...]
PARTS_PREFIX = "_bulk"  # _bulk/<tenant>/<job>/part-<row>.json in the faces bucket (KMS)
MAX_ROWS = 500  # manifest rows per item: the map's batcher is bounded to this (one call < 10 min)
MANIFEST_MAX_BYTES = 256 << 20  # the largest manifest a job takes (1M rows fit many times over)
