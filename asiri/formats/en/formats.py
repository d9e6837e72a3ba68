# The support console shows exact times: seconds and the timezone (TIME_ZONE is UTC), ISO 8601 order.
# Two attempts six seconds apart must not read the same, and a time pasted into a ticket must say its zone.
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
