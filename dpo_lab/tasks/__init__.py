"""Tasks of the course, one module each: its data, its gold reward, its Hub mapping."""
