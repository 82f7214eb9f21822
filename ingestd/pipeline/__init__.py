"""The pipeline stages: fetch -> parse -> clean -> dedupe, strung together by ingest."""
