"""Pure torch numerics: the Jacobian operator, the exact spectrum, the estimators. No Typer, no Rich."""
