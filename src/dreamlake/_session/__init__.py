"""The two faces (Session, AsyncSession) and the handles they give out: tracks, parameters, files, logs."""
