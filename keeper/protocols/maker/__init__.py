"""Maker/Sky Liquidation 2.0: Dog.bark, Clipper take/redo, flash-take through TakeCallee."""
