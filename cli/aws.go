package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// `dstack aws`: the AWS account the server launches on-demand runners in.
// The credentials go to the server, which checks them against AWS before
// it keeps them (encrypted) and never shows the secret again; this command
// never prints it either.

// awsPermissions are the IAM permissions on-demand runners need.
const awsPermissions = `    ec2:Describe*
    ec2:RunInstances
    ec2:CreateTags
    ec2:RequestSpotInstances
    ec2:TerminateInstances
    ec2:CancelSpotInstanceRequests
    ec2:CreateSecurityGroup
    ec2:AuthorizeSecurityGroupIngress
    ec2:AuthorizeSecurityGroupEgress
  and, with an artifact bucket: s3:ListBucket, s3:GetObject, s3:PutObject and
  s3:AbortMultipartUpload on it.`

func (e *Env) awsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aws COMMAND",
		Short: "Configure the AWS account on-demand runners run in",
		Long: `Give the server the credentials of the AWS account it launches on-demand
runners in: ` + "`dstack aws config`" + `. Then limits (` + "`dstack on-demand limit`" + `) say which
EC2 instance types it may use, and how many.

The IAM user needs:
` + awsPermissions,
		Args: noArgs,
	}
	cmd.AddCommand(e.awsConfigCmd(), e.awsInfoCmd(), e.awsClearCmd())
	return cmd
}

// awsValues are what `dstack aws config` sends, and which of them the
// command line gave.
type awsValues struct {
	req                                api.AWSConfigRequest
	keyGiven, secretGiven, regionGiven bool
	bucketGiven, amiGiven, gpuAMIGiven bool
	secretStdin                        bool
}

func (e *Env) awsConfigCmd() *cobra.Command {
	var v awsValues
	cmd := &cobra.Command{
		Use:     "config [--access-key-id ID] [--secret-access-key KEY | --secret-access-key-stdin] [--region REGION] [--artifact-bucket BUCKET] [--ami AMI] [--gpu-ami AMI]",
		Aliases: []string{"configure"},
		Short:   "Set the AWS credentials, region and artifact bucket",
		Long: `Set the AWS account the server launches on-demand runners in. Without flags,
in a terminal, it asks as ` + "`aws configure`" + ` does:

  AWS Access Key ID:
  AWS Secret Access Key:
  Region name:
  Artifact S3 bucket[None]:

The secret is read without echo. Where AWS is configured already, the
current values are the defaults, shown in brackets (the key ID and the
secret masked): press Enter to keep one. The region is where limits go when
they name none. The artifact bucket is optional: with one, the artifacts of
runs submitted from then on go to s3://BUCKET/dstack/ (type None for none).

The server checks the credentials against EC2 (and the bucket against S3)
before it saves them; AWS's refusal is shown and nothing is saved. Only an
admin may change them.

Flags set values without a question; in a terminal the command asks only
for what they leave missing, and without one it says which flags to add.
Values not given keep the current ones. The secret as
--secret-access-key-stdin (read from standard input) stays out of the
process list and the shell's history.`,
		Example: `  dstack aws config
  dstack aws config --access-key-id AKIAIOSFODNN7EXAMPLE --secret-access-key-stdin --region eu-west-1 < secret.txt
  dstack aws config --region us-east-1      # keep the credentials, change the region`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			v.keyGiven, v.secretGiven, v.regionGiven = f.Changed("access-key-id"), f.Changed("secret-access-key"), f.Changed("region")
			v.bucketGiven, v.amiGiven, v.gpuAMIGiven = f.Changed("artifact-bucket"), f.Changed("ami"), f.Changed("gpu-ami")
			if v.secretStdin && v.secretGiven {
				return usagef("--secret-access-key and --secret-access-key-stdin go separately: give one")
			}
			return e.awsConfig(cmd.Context(), v)
		},
	}
	f := cmd.Flags()
	f.StringVar(&v.req.AccessKeyID, "access-key-id", "", "AWS access key ID")
	f.StringVar(&v.req.SecretAccessKey, "secret-access-key", "", "AWS secret access key (visible to other users of this machine: prefer --secret-access-key-stdin)")
	f.BoolVar(&v.secretStdin, "secret-access-key-stdin", false, "read the secret access key from standard input")
	f.StringVar(&v.req.Region, "region", "", "region name, such as eu-west-1: the default region of limits")
	f.StringVar(&v.req.ArtifactBucket, "artifact-bucket", "", "S3 bucket for artifacts (None for none)")
	f.StringVar(&v.req.AMI, "ami", "", "image of instances without GPUs (default: the backend's choice)")
	f.StringVar(&v.req.GPUAMI, "gpu-ami", "", "image of instances with GPUs (default: the backend's choice)")
	return cmd
}

// abbrevKey is an access key ID as messages show it: "AKIA…MPLE".
func abbrevKey(id string) string {
	if len(id) <= 8 {
		return id
	}
	return id[:4] + "…" + id[len(id)-4:]
}

// maskKey is an access key ID as a prompt's default shows it, like `aws
// configure`: "****************MPLE"; "" stays "".
func maskKey(id string) string {
	switch {
	case id == "":
		return ""
	case len(id) <= 4:
		return strings.Repeat("*", 16)
	}
	return strings.Repeat("*", 16) + id[len(id)-4:]
}

func (e *Env) awsConfig(ctx context.Context, v awsValues) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	cur, err := c.AWSGet(ctx)
	if err != nil {
		return c.explain(err)
	}
	if !cur.Configured {
		cur = &api.AWSConfig{}
	}
	req := v.req
	if v.secretStdin {
		b, err := io.ReadAll(io.LimitReader(e.Stdin, 4<<10))
		if err != nil {
			return fmt.Errorf("read the secret access key from standard input: %w", err)
		}
		req.SecretAccessKey, v.secretGiven = strings.TrimSpace(string(b)), true
		if req.SecretAccessKey == "" {
			return usagef("--secret-access-key-stdin: standard input is empty; give the secret there")
		}
	}
	// Values neither given nor asked for keep the current ones; an empty
	// secret keeps the current one of the same key ID on the server.
	if !v.bucketGiven {
		req.ArtifactBucket = cur.ArtifactBucket
	}
	if !v.amiGiven {
		req.AMI = cur.AMI
	}
	if !v.gpuAMIGiven {
		req.GPUAMI = cur.GPUAMI
	}
	allGiven := (v.keyGiven || cur.AccessKeyID != "") && (v.secretGiven || (cur.Configured && (!v.keyGiven || req.AccessKeyID == cur.AccessKeyID))) &&
		(v.regionGiven || cur.Region != "")
	flagsGiven := v.keyGiven || v.secretGiven || v.regionGiven || v.bucketGiven || v.amiGiven || v.gpuAMIGiven
	if !flagsGiven && !v.secretStdin && e.interactive() {
		if err := e.awsPrompt(&req, cur); err != nil {
			return err
		}
	} else if !allGiven && !v.secretStdin && e.interactive() {
		if err := e.awsPromptMissing(&req, v, cur); err != nil {
			return err
		}
	} else {
		if !v.keyGiven {
			req.AccessKeyID = cur.AccessKeyID
		}
		if !v.regionGiven {
			req.Region = cur.Region
		}
		var missing []string
		if req.AccessKeyID == "" {
			missing = append(missing, "--access-key-id")
		}
		if req.SecretAccessKey == "" && (!cur.Configured || req.AccessKeyID != cur.AccessKeyID) {
			missing = append(missing, "--secret-access-key-stdin (or --secret-access-key)")
		}
		if req.Region == "" {
			missing = append(missing, "--region")
		}
		if len(missing) > 0 {
			return usagef("missing %s: give them as flags, or run `dstack aws config` in a terminal to be asked", strings.Join(missing, " and "))
		}
	}
	saved, err := c.AWSPut(ctx, req)
	if err != nil {
		return c.explain(err)
	}
	msg := fmt.Sprintf("AWS credentials saved: access key %s, region %s", abbrevKey(saved.AccessKeyID), saved.Region)
	if saved.ArtifactBucket != "" {
		msg += ", artifacts in s3://" + saved.ArtifactBucket
	}
	fmt.Fprintln(e.Stdout, msg)
	for _, n := range saved.Notes {
		fmt.Fprintln(e.Stdout, "Note: "+n)
	}
	return nil
}

// lineReader reads the answers to prompts: lines, and the secret without
// echo where stdin is a real terminal.
type lineReader struct {
	e  *Env
	br *bufio.Reader
}

func (l *lineReader) ask(prompt string) (string, error) {
	fmt.Fprint(l.e.Stderr, prompt)
	line, err := l.br.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", errors.New("no answer: standard input ended; give the values as flags")
	}
	return strings.TrimSpace(line), nil
}

func (l *lineReader) askSecret(prompt string) (string, error) {
	if f, ok := l.e.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(l.e.Stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(l.e.Stderr)
		if err != nil {
			return "", fmt.Errorf("read the secret access key: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return l.ask(prompt)
}

// awsPrompt asks the four questions of `aws configure`, the current values
// as defaults.
func (e *Env) awsPrompt(req *api.AWSConfigRequest, cur *api.AWSConfig) error {
	l := &lineReader{e: e, br: bufio.NewReader(e.Stdin)}
	def := func(v string) string {
		if v == "" {
			return ""
		}
		return " [" + v + "]"
	}
	id, err := l.ask("AWS Access Key ID" + def(maskKey(cur.AccessKeyID)) + ": ")
	if err != nil {
		return err
	}
	req.AccessKeyID = cmpOr(id, cur.AccessKeyID)
	if req.AccessKeyID == "" {
		return errors.New("an access key ID is required")
	}
	same := cur.Configured && req.AccessKeyID == cur.AccessKeyID
	secretDef := ""
	if same {
		secretDef = def(cur.SecretAccessKey)
	}
	if req.SecretAccessKey, err = l.askSecret("AWS Secret Access Key" + secretDef + ": "); err != nil {
		return err
	}
	if req.SecretAccessKey == "" && !same {
		return fmt.Errorf("the secret access key of %s is required", abbrevKey(req.AccessKeyID))
	}
	region, err := l.ask("Region name" + def(cur.Region) + ": ")
	if err != nil {
		return err
	}
	if req.Region = cmpOr(region, cur.Region); req.Region == "" {
		return errors.New("a region name is required, such as eu-west-1")
	}
	bucket, err := l.ask("Artifact S3 bucket[" + cmpOr(cur.ArtifactBucket, "None") + "]: ")
	if err != nil {
		return err
	}
	req.ArtifactBucket = cmpOr(bucket, cur.ArtifactBucket)
	return nil
}

// awsPromptMissing asks, in a terminal, for the required values the flags
// did not give.
func (e *Env) awsPromptMissing(req *api.AWSConfigRequest, v awsValues, cur *api.AWSConfig) error {
	l := &lineReader{e: e, br: bufio.NewReader(e.Stdin)}
	var err error
	if !v.keyGiven {
		if cur.AccessKeyID != "" {
			req.AccessKeyID = cur.AccessKeyID
		} else if req.AccessKeyID, err = l.ask("AWS Access Key ID: "); err != nil {
			return err
		}
	}
	if !v.secretGiven && (!cur.Configured || req.AccessKeyID != cur.AccessKeyID) {
		if req.SecretAccessKey, err = l.askSecret("AWS Secret Access Key: "); err != nil {
			return err
		}
	}
	if !v.regionGiven {
		if cur.Region != "" {
			req.Region = cur.Region
		} else if req.Region, err = l.ask("Region name: "); err != nil {
			return err
		}
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (e *Env) awsInfoCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info [--json]",
		Short: "Show the AWS configuration (the secret masked)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.awsInfo(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the configuration as JSON")
	return cmd
}

func (e *Env) awsInfo(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	cur, err := c.AWSGet(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, cur)
	}
	if !cur.Configured {
		fmt.Fprintln(e.Stdout, "AWS is not configured: run `dstack aws config`.")
		return nil
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("Access key ID:", cur.AccessKeyID)
	row("Secret access key:", cur.SecretAccessKey)
	row("Region:", cur.Region)
	bucket := "None"
	if cur.ArtifactBucket != "" {
		bucket = "s3://" + cur.ArtifactBucket
	}
	row("Artifact S3 bucket:", bucket)
	if cur.AMI != "" {
		row("AMI:", cur.AMI)
	}
	if cur.GPUAMI != "" {
		row("GPU AMI:", cur.GPUAMI)
	}
	if cur.UpdatedAt != nil {
		when := cur.UpdatedAt.Local().Format("2006-01-02 15:04")
		if cur.UpdatedBy != "" {
			when += " by " + cur.UpdatedBy
		}
		row("Updated:", when)
	}
	return tw.Flush()
}

func (e *Env) awsClearCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "clear [-f]",
		Short: "Delete the AWS credentials from the server",
		Long: `Delete the AWS credentials from the server: on-demand runners no longer run
on AWS. Your AWS limits are kept, and wait until AWS is configured again.
The server refuses while AWS instances run: terminate them first with
` + "`dstack on-demand disable`" + ` (or by deleting their limits). You are asked first
unless --force.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.awsClear(cmd.Context(), force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "don't ask for confirmation")
	return cmd
}

func (e *Env) awsClear(ctx context.Context, force bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	cur, err := c.AWSGet(ctx)
	if err != nil {
		return c.explain(err)
	}
	if !cur.Configured {
		fmt.Fprintln(e.Stdout, "AWS is not configured: nothing to clear.")
		return nil
	}
	if !force {
		// The server says first whether it would refuse, so the user is
		// not asked in vain.
		if err := c.AWSDelete(ctx, true); err != nil {
			return awsClearErr(c, err)
		}
		what := fmt.Sprintf("Clearing the AWS credentials (access key %s) stops on-demand runners on AWS", abbrevKey(cur.AccessKeyID))
		if err := e.ask(what); err != nil {
			return err
		}
	}
	if err := c.AWSDelete(ctx, false); err != nil {
		return awsClearErr(c, err)
	}
	fmt.Fprintln(e.Stdout, "AWS credentials cleared. Your AWS limits are kept: they wait until `dstack aws config` is run again.")
	return nil
}

// awsClearErr shows the server's refusal as it is: it says what to do.
func awsClearErr(c *apiClient, err error) error {
	if client.IsCode(err, api.CodeConflict) {
		return err
	}
	return c.explain(err)
}
