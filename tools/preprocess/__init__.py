"""Video files -> the official frames/audio/transcript layout and annotation JSON; see cli.py or --help."""
