"""glowtools' benchmark: each figure of issue 7 beside its floor (make bench)."""
