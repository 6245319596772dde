"""fltool plugin package."""
