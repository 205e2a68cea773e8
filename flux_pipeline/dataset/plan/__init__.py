"""What to make: prompt tables, recipes and final rows, validated into the requests a partition sends."""
