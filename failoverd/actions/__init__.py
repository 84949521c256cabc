"""Side effects, one module each. Each turns a core Action into an ActionResult; none decides."""
