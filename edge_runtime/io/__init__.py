"""Sources, the frame pipeline, drawing, the web view and thermal readings."""
