"""Searches over job-spec fields with Ray Tune (`ganpipe tune`)."""
