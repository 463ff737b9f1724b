"""Discord voice I/O for Cap: hearing callers (RTP, decryption, DAVE, jitter, mixing) and speaking."""
