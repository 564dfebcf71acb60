package ec2fake

import "strings"

// This file is CreateTags and DeleteTags.

// maxTags is the number of tags a resource may have.
const maxTags = 50

// taggable is a resource CreateTags and DeleteTags can reach.
func (s *Server) taggable(r *request, id string) (map[string]string, error) {
	switch {
	case strings.HasPrefix(id, "i-"):
		in, ok := s.state.instances[id]
		if !ok || in.Region != r.region {
			return nil, notFound("InvalidInstanceID.NotFound", "instance ID", []string{id})
		}
		if in.Tags == nil {
			in.Tags = map[string]string{}
		}
		return in.Tags, nil
	case strings.HasPrefix(id, "sir-"):
		sr, ok := s.state.spot[id]
		if !ok || sr.region != r.region {
			return nil, notFound("InvalidSpotInstanceRequestID.NotFound", "spot instance request ID", []string{id})
		}
		return sr.tags, nil
	case strings.HasPrefix(id, "sg-"):
		g := s.state.groupByID(r.region, id)
		if g == nil {
			return nil, notFound("InvalidGroup.NotFound", "security group", []string{id})
		}
		return g.tags, nil
	}
	return nil, errorf("InvalidID", "The ID '%s' is not valid", id)
}

func (s *Server) createTags(r *request) (any, error) {
	return s.changeTags(r, func(m map[string]string, t tag) { m[t.key] = t.value }, true)
}

func (s *Server) deleteTags(r *request) (any, error) {
	return s.changeTags(r, func(m map[string]string, t tag) {
		if v, ok := m[t.key]; ok && (!t.hasValue || v == t.value) {
			delete(m, t.key)
		}
	}, false)
}

// changeTags applies f to each tag of each resource, after checking them
// all: one bad resource changes nothing.
func (s *Server) changeTags(r *request, f func(map[string]string, tag), create bool) (any, error) {
	ids := r.list("ResourceId")
	if len(ids) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags, err := r.tags("Tag")
	if err != nil {
		return nil, err
	}
	if create && len(tags) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter tagSet")
	}
	var targets []map[string]string
	for _, id := range ids {
		m, err := s.taggable(r, id)
		if err != nil {
			return nil, err
		}
		if create {
			n := len(m)
			for _, t := range tags {
				if _, ok := m[t.key]; !ok {
					n++
				}
			}
			if n > maxTags {
				return nil, errorf("TagLimitExceeded", "The maximum number of Tags for a resource is %d.", maxTags)
			}
		}
		targets = append(targets, m)
	}
	for _, m := range targets {
		for _, t := range tags {
			f(m, t)
		}
		if !create && len(tags) == 0 {
			clear(m)
		}
	}
	return &returnTrue{Return: true}, nil
}
