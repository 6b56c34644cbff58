"""The features of the pipeline, one job each; ``pipeline.FEATURES`` lists them."""
