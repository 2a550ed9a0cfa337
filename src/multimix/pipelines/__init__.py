"""What a command does end to end: evaluate a run, predict a folder, the demo.

Above explain and report (it uses both), below the CLI.
"""
