"""Where a model looks: class activation maps (grad-cam) for files, the study report and the web page."""
