"""End-of-turn providers: the smart-turn model and the plain silence rule."""
