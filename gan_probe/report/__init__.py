"""Results into files: strict JSON and atomic output (:mod:`.files`), the report and its gates
(:mod:`.report`), images and plots, and one writer per result type (:mod:`.outputs`)."""
