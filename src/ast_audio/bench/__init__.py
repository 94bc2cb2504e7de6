"""`ast-audio bench`: inference speed of every precision against the peer implementations (speed.py, peers.py), and
the fast paths' accuracy against fp32 (accuracy.py)."""
