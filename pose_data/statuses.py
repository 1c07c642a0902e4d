"""Row statuses of the output metadata (binding for readers of ``DIR/meta``)."""

OK = "ok"
DOWNLOAD_FAILED = "download_failed"
DECODE_FAILED = "decode_failed"
NO_PERSON = "no_person"
LOW_CONFIDENCE = "low_confidence"
TOO_MANY_PERSONS = "too_many_persons"
TOO_SMALL = "too_small"

LAION_POSE_STATUSES = (OK, DOWNLOAD_FAILED, DECODE_FAILED, NO_PERSON, LOW_CONFIDENCE, TOO_MANY_PERSONS, TOO_SMALL)
