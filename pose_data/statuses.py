"""Row statuses of the output metadata (binding for readers of ``DIR/meta``)."""

OK = "ok"
DOWNLOAD_FAILED = "download_failed"
DECODE_FAILED = "decode_failed"
NO_PERSON = "no_person"
LOW_CONFIDENCE = "low_confidence"
TOO_MANY_PERSONS = "too_many_persons"
TOO_SMALL = "too_small"
NO_HAND = "no_hand"  # filter.min_hand_keypoints is set and no kept person has a hand with that many confident points

LAION_POSE_STATUSES = (OK, DOWNLOAD_FAILED, DECODE_FAILED, NO_PERSON, LOW_CONFIDENCE, TOO_MANY_PERSONS, TOO_SMALL, NO_HAND)

# HD-VILA clip index (``pose-data index-hdvila``), one status per clip row
VIDEO_MISSING = "video_missing"
SPAN_OUT_OF_RANGE = "span_out_of_range"
TOO_SHORT = "too_short"
FILTERED = "filtered"
BAD_METADATA = "bad_metadata"

HDVILA_STATUSES = (OK, VIDEO_MISSING, DECODE_FAILED, SPAN_OUT_OF_RANGE, TOO_SHORT, FILTERED, BAD_METADATA)
