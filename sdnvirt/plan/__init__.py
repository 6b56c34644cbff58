"""Pure planning: the model and the fabric in, OpenFlow flow specs out."""
