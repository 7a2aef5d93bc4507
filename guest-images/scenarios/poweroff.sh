# Powers off at once.
poweroff -f
