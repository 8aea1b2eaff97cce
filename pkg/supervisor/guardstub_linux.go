package supervisor

// TEMPORARY until the spawner branch lands.
func adoptGuard(fd int, nnp bool) error                       { return nil }
func (s *spawner) guardListener() (int, string)               { return -1, "" }
func (s *spawner) exec(path string, argv, env []string) error { return nil }
