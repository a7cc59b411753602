"""The LM itself: backbone loading, the SID vocabulary, model files and checkpoints."""
