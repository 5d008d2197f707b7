"""The steps of a generate run, one module each, keeping its prompt, its engine requests and its parser
together: selection -> principle_writing (optional) -> sampling. `common` holds what they share."""
