package servercmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/server"
)

// backupCommand is `dstack server backup --out FILE`.
func backupCommand(getenv func(string) string) *cobra.Command {
	var out, dataDir string
	cmd := &cobra.Command{
		Use:   "backup --out FILE [--data-dir D]",
		Short: "Copy the server's SQLite state to a file, while the server runs",
		Long: `Write a consistent copy of the server's SQLite database (users, tokens,
runs, jobs, runners, settings) to FILE, while the server runs: the copy is
one read of the database (VACUUM INTO), which the server's writes do not
wait for. FILE must not exist; it is written private (0600), since it holds
credentials, and appears only once complete.

Give the server's --data-dir (or DSTACK_SERVER_DATA_DIR). Code archives,
artifacts and logs under the data directory are files: copy them as files
(or keep them in S3 with --artifacts). The server key, encryption.key in
the data directory unless DSTACK_SERVER_ENCRYPTION_KEY is set, is needed to
read the AWS credentials back: keep it apart from the backups.

A server on PostgreSQL is backed up with pg_dump; see docs/operations.md.
To restore, stop the server and put the copy in place of dstack.db (with no
dstack.db-wal or dstack.db-shm beside it).`,
		Example: `  dstack server backup --out /backups/dstack-$(date +%F).db
  dstack server backup --data-dir /var/lib/dstack --out dstack.db.bak`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := server.Config{DataDir: dataDir, Getenv: getenv}
			if cfg.DataDir == "" {
				cfg.DataDir = getenv("DSTACK_SERVER_DATA_DIR")
				cfg.DB = getenv("DSTACK_SERVER_DB")
			}
			size, err := server.Backup(cmd.Context(), cfg, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Backed up the server's state to %s (%d bytes).\n", out, size)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "the file to write the copy to; it must not exist")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data directory, with its SQLite state (default ~/.dstack/server)")
	return cmd
}
