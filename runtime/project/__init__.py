"""The project loader and hot reload: fnrun.yaml and the functions folder
to validated specs (`runtime.specs`), and the reload of what changed.

`manifest` scans a project (`settings_loader` for fnrun.yaml, `yamlnodes`
and `yamlmessages` for safe YAML with FILE:LINE:COL errors,
`projectfiles` for reading untrusted files, `code_files` for what a
handler's code is made of); `reloader` watches and applies a reload,
`reload_rules` and `registry` are its pure decisions.
"""
