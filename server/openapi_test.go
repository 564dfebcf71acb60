package server

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
)

// loadOpenAPI parses the document the server serves.
func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml is not valid YAML: %v", err)
	}
	m, ok := openAPINormalize(doc).(map[string]any)
	if !ok {
		t.Fatalf("openapi.yaml: top level is %T, want a mapping", doc)
	}
	return m
}

// openAPINormalize turns every mapping into a map[string]any.
func openAPINormalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = openAPINormalize(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = openAPINormalize(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = openAPINormalize(e)
		}
		return v
	}
	return v
}

// servedRoute is one pattern registered on the server's mux.
type servedRoute struct {
	method, path string
	// auth is the security scheme the handler is wrapped in: "userToken"
	// (asUser), "runnerToken" (asRunner) or "" (none).
	auth string
}

func (r servedRoute) String() string { return r.method + " " + r.path }

// servedRoutes reads the routes the server registers from the package's
// source: the patterns passed to Handle and HandleFunc, built from string
// literals, constants of package api and local variables bound to them.
func servedRoutes(t *testing.T) []servedRoute {
	t.Helper()
	consts := map[string]string{"api.PathPrefix": api.PathPrefix}
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var routes []servedRoute
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			routes = append(routes, funcServedRoutes(t, fset, fn, consts)...)
		}
	}
	return routes
}

// funcServedRoutes collects the routes one function registers.
func funcServedRoutes(t *testing.T, fset *token.FileSet, fn *ast.FuncDecl, consts map[string]string) []servedRoute {
	t.Helper()
	vars := map[string]string{}
	var routes []servedRoute
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			// Remember string variables (p := api.PathPrefix); others are
			// of no interest and left out.
			if len(n.Lhs) == len(n.Rhs) {
				for i, l := range n.Lhs {
					id, ok := l.(*ast.Ident)
					if !ok {
						continue
					}
					if v, err := evalPattern(n.Rhs[i], vars, consts); err == nil {
						vars[id.Name] = v
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || len(n.Args) < 2 {
				return true
			}
			// The router's methods (roles.go) and the mux's own.
			auth, isRoute := map[string]string{
				"Handle": "", "HandleFunc": "", "public": "", "page": "", "adminPage": "",
				"member": "userToken", "admin": "userToken", "runner": "runnerToken",
			}[sel.Sel.Name]
			if !isRoute {
				return true
			}
			if _, ok := sel.X.(*ast.Ident); !ok {
				return true
			}
			pos := fset.Position(n.Pos())
			pattern, err := evalPattern(n.Args[0], vars, consts)
			if err != nil {
				t.Fatalf("%s: route pattern: %v (teach servedRoutes to evaluate it)", pos, err)
			}
			method, path, ok := strings.Cut(pattern, " ")
			if !ok {
				if pattern == "/api/" {
					return true // the catch-all that answers not_found
				}
				t.Fatalf("%s: route %q has no method: document it, then teach this test how", pos, pattern)
			}
			r := servedRoute{method: method, path: strings.TrimSpace(path), auth: auth}
			if call, ok := n.Args[len(n.Args)-1].(*ast.CallExpr); ok {
				if s, ok := call.Fun.(*ast.SelectorExpr); ok {
					switch s.Sel.Name {
					case "asUser":
						r.auth = "userToken"
					case "asRunner":
						r.auth = "runnerToken"
					}
				}
			}
			routes = append(routes, r)
		}
		return true
	})
	return routes
}

// evalPattern evaluates a constant string expression: literals, +, api
// constants and the variables bound so far.
func evalPattern(e ast.Expr, vars, consts map[string]string) (string, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", fmt.Errorf("%s is not a string", e.Value)
		}
		return strconv.Unquote(e.Value)
	case *ast.ParenExpr:
		return evalPattern(e.X, vars, consts)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", fmt.Errorf("operator %s in a string expression", e.Op)
		}
		x, err := evalPattern(e.X, vars, consts)
		if err != nil {
			return "", err
		}
		y, err := evalPattern(e.Y, vars, consts)
		if err != nil {
			return "", err
		}
		return x + y, nil
	case *ast.Ident:
		if v, ok := vars[e.Name]; ok {
			return v, nil
		}
		return "", fmt.Errorf("unknown identifier %s", e.Name)
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			if v, ok := consts[x.Name+"."+e.Sel.Name]; ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("unknown selector .%s", e.Sel.Name)
	}
	return "", fmt.Errorf("cannot evaluate %T", e)
}

var muxWildcardTail = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\.\.\.\}`)

// openAPIPath turns a ServeMux path into an OpenAPI path template: {name...}
// is {name}, and the end anchor {$} (GET /{$} is "/" alone) is dropped.
func openAPIPath(p string) string {
	return strings.TrimSuffix(muxWildcardTail.ReplaceAllString(p, "{$1}"), "{$}")
}

var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// openAPIOperations lists the document's operations as "METHOD path".
func openAPIOperations(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("openapi.yaml has no paths")
	}
	ops := map[string]map[string]any{}
	for p, item := range paths {
		item, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("paths[%q] is not a mapping", p)
		}
		for _, m := range openAPIMethods {
			if op, ok := item[m]; ok {
				opm, ok := op.(map[string]any)
				if !ok {
					t.Fatalf("paths[%q].%s is not a mapping", p, m)
				}
				ops[strings.ToUpper(m)+" "+p] = opm
			}
		}
	}
	return ops
}

func TestOpenAPIIsOpenAPI3(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	v, _ := doc["openapi"].(string)
	if !strings.HasPrefix(v, "3.") {
		t.Errorf("openapi = %q, want 3.x", v)
	}
	info, _ := doc["info"].(map[string]any)
	if s, _ := info["title"].(string); s == "" {
		t.Error("info.title is missing")
	}
	if s, _ := info["version"].(string); s == "" {
		t.Error("info.version is missing (quote it: a number is not a string)")
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	routes := servedRoutes(t)
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in the package's source: has routes() moved or changed shape?", len(routes))
	}
	ops := openAPIOperations(t, doc)
	served := map[string]servedRoute{}
	for _, r := range routes {
		key := r.method + " " + openAPIPath(r.path)
		if _, dup := served[key]; dup {
			t.Errorf("route %s is registered twice", key)
		}
		served[key] = r
		if _, ok := ops[key]; !ok {
			t.Errorf("route %s is served but not documented in openapi.yaml", r)
		}
	}
	var extra []string
	for key := range ops {
		if _, ok := served[key]; !ok {
			extra = append(extra, key)
		}
	}
	sort.Strings(extra)
	for _, key := range extra {
		t.Errorf("openapi.yaml documents %s, which the server does not serve", key)
	}

	// Each served operation names the security scheme its handler checks.
	global, hasGlobal := doc["security"]
	for key, r := range served {
		op, ok := ops[key]
		if !ok {
			continue
		}
		sec, ok := op["security"]
		if !ok {
			sec, ok = global, hasGlobal
		}
		var got []string
		if reqs, _ := sec.([]any); ok {
			for _, req := range reqs {
				m, _ := req.(map[string]any)
				for name := range m {
					got = append(got, name)
				}
			}
		}
		sort.Strings(got)
		var want []string
		if r.auth != "" {
			want = []string{r.auth}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: security %v, want %v", key, got, want)
		}
	}
}

func TestOpenAPIOperations(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	ids := map[string]string{}
	placeholder := regexp.MustCompile(`\{([^}]+)\}`)
	for key, op := range openAPIOperations(t, doc) {
		if s, _ := op["description"].(string); strings.TrimSpace(s) == "" {
			t.Errorf("%s has no description", key)
		}
		id, _ := op["operationId"].(string)
		if id == "" {
			t.Errorf("%s has no operationId", key)
		} else if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share operationId %q", key, other, id)
		}
		ids[id] = key

		// Path parameters are exactly the template's placeholders.
		_, path, _ := strings.Cut(key, " ")
		var want []string
		for _, m := range placeholder.FindAllStringSubmatch(path, -1) {
			want = append(want, m[1])
		}
		sort.Strings(want)
		var got []string
		headers := map[string]bool{}
		params, _ := op["parameters"].([]any)
		item := doc["paths"].(map[string]any)[path].(map[string]any)
		if shared, ok := item["parameters"].([]any); ok {
			params = append(slices.Clone(shared), params...)
		}
		for _, p := range params {
			pm, ok := openAPIResolve(t, doc, p).(map[string]any)
			if !ok {
				t.Errorf("%s: a parameter is not a mapping", key)
				continue
			}
			name, _ := pm["name"].(string)
			switch pm["in"] {
			case "path":
				got = append(got, name)
				if pm["required"] != true {
					t.Errorf("%s: path parameter %s must be required", key, name)
				}
			case "header":
				headers[strings.ToLower(name)] = pm["required"] == true
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: path parameters %v, want %v", key, got, want)
		}
		if strings.HasPrefix(path, api.PathPrefix+"/runner/jobs/") && !headers[strings.ToLower(api.LeaseHeader)] {
			t.Errorf("%s: the %s header is not a required parameter", key, api.LeaseHeader)
		}

		// At least one success, and every failure is an api.ErrorBody.
		responses, _ := op["responses"].(map[string]any)
		ok2xx := false
		for code, resp := range responses {
			if strings.HasPrefix(code, "2") {
				ok2xx = true
				continue
			}
			rm, _ := openAPIResolve(t, doc, resp).(map[string]any)
			content, _ := rm["content"].(map[string]any)
			media, _ := content["application/json"].(map[string]any)
			if media == nil || len(content) != 1 {
				t.Errorf("%s: response %s must be application/json only", key, code)
				continue
			}
			schema, _ := media["schema"].(map[string]any)
			if ref, _ := schema["$ref"].(string); ref != "#/components/schemas/ErrorBody" {
				t.Errorf("%s: response %s has schema %v, want the ErrorBody", key, code, media["schema"])
			}
		}
		if !ok2xx {
			t.Errorf("%s documents no 2xx response", key)
		}
	}
}

// openAPIResolve follows a $ref, if v is one.
func openAPIResolve(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	for range 10 {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return v
		}
		target, err := openAPILookupRef(doc, ref)
		if err != nil {
			t.Errorf("$ref %q: %v", ref, err)
			return nil
		}
		v = target
	}
	t.Errorf("$ref chain too long at %v", v)
	return nil
}

// openAPILookupRef resolves a local JSON pointer reference.
func openAPILookupRef(doc map[string]any, ref string) (any, error) {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("only local references (#/...) are used here")
	}
	var cur any = doc
	for _, tok := range strings.Split(ptr, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q is not inside a mapping", tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("no %q", tok)
		}
	}
	return cur, nil
}

func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	n := 0
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"]; ok {
				n++
				s, ok := ref.(string)
				if !ok {
					t.Errorf("%s: $ref is %T, want a string", where, ref)
				} else if _, err := openAPILookupRef(doc, s); err != nil {
					t.Errorf("%s: $ref %q does not resolve: %v", where, s, err)
				}
			}
			for k, e := range v {
				walk(where+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s/%d", where, i), e)
			}
		}
	}
	walk("#", doc)
	if n == 0 {
		t.Error("no $ref found: has the document lost its components?")
	}
}

// TestOpenAPISchemasMatchAPITypes checks components/schemas against
// api/types.go: a schema per struct with the same JSON field names, and the
// enums of the string types and the error codes equal to their constants.
func TestOpenAPISchemasMatchAPITypes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	comps, _ := doc["components"].(map[string]any)
	schemas, _ := comps["schemas"].(map[string]any)
	if schemas == nil {
		t.Fatal("openapi.yaml has no components/schemas")
	}
	var decls []ast.Decl
	for _, name := range []string{"types.go", "cost.go"} {
		src := filepath.Join("..", "api", name)
		if _, err := os.Stat(src); err != nil {
			t.Fatalf("api types: %v", err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), src, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		decls = append(decls, f.Decls...)
	}
	enums := map[string][]string{} // type name ("" for untyped Code*) -> values
	for _, d := range decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range gd.Specs {
			switch s := spec.(type) {
			case *ast.TypeSpec:
				schema, ok := schemas[s.Name.Name].(map[string]any)
				if !ok {
					t.Errorf("api.%s has no schema in components/schemas", s.Name.Name)
					continue
				}
				if st, ok := s.Type.(*ast.StructType); ok {
					checkOpenAPIStruct(t, s.Name.Name, st, schema)
				}
			case *ast.ValueSpec:
				if gd.Tok != token.CONST || len(s.Values) != len(s.Names) {
					continue
				}
				typ := ""
				if id, ok := s.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, name := range s.Names {
					lit, ok := s.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					if typ == "" && !strings.HasPrefix(name.Name, "Code") {
						continue
					}
					enums[typ] = append(enums[typ], v)
				}
			}
		}
	}
	errSchema, _ := schemas["Error"].(map[string]any)
	props, _ := errSchema["properties"].(map[string]any)
	checkOpenAPIEnum(t, "Error.code", enums[""], props["code"])
	delete(enums, "")
	if len(enums) == 0 {
		t.Error("found no typed string constants in api/types.go")
	}
	for typ, values := range enums {
		checkOpenAPIEnum(t, typ, values, schemas[typ])
	}
}

func checkOpenAPIStruct(t *testing.T, name string, st *ast.StructType, schema map[string]any) {
	t.Helper()
	var want []string
	for _, fld := range st.Fields.List {
		if fld.Tag == nil || len(fld.Names) == 0 {
			continue
		}
		tag, _ := strconv.Unquote(fld.Tag.Value)
		j, ok := reflect.StructTag(tag).Lookup("json")
		if !ok {
			continue
		}
		j, _, _ = strings.Cut(j, ",")
		if j == "-" || j == "" {
			continue
		}
		want = append(want, j)
	}
	sort.Strings(want)
	props, _ := schema["properties"].(map[string]any)
	var got []string
	for k := range props {
		got = append(got, k)
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("schema %s has properties %v, api.%s has JSON fields %v", name, got, name, want)
	}
	req, _ := schema["required"].([]any)
	for _, r := range req {
		if _, ok := props[fmt.Sprint(r)]; !ok {
			t.Errorf("schema %s requires %v, which it does not define", name, r)
		}
	}
}

func checkOpenAPIEnum(t *testing.T, name string, want []string, schema any) {
	t.Helper()
	m, _ := schema.(map[string]any)
	var got []string
	list, _ := m["enum"].([]any)
	for _, v := range list {
		got = append(got, fmt.Sprint(v))
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: enum %v, want the constants %v", name, got, want)
	}
}
